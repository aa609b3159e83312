//! `strategy`: which selection algorithm a pool is configured with. Only the name and its
//! parsing live here; the algorithms themselves are `upstream/balance/`.

use std::fmt;

/// The selection strategies a pool can be configured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    RoundRobin,
    Weighted,
    LeastConnections,
    Random,
    ConsistentHash,
}

impl Strategy {
    /// The config names, in the order error messages list them.
    pub const NAMES: &'static str =
        "round_robin, weighted, least_connections, random, consistent_hash";

    /// Parses a config name such as `"least_connections"`.
    pub fn from_name(name: &str) -> Option<Strategy> {
        match name {
            "round_robin" => Some(Strategy::RoundRobin),
            "weighted" => Some(Strategy::Weighted),
            "least_connections" => Some(Strategy::LeastConnections),
            "random" => Some(Strategy::Random),
            "consistent_hash" => Some(Strategy::ConsistentHash),
            _ => None,
        }
    }

    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round_robin",
            Strategy::Weighted => "weighted",
            Strategy::LeastConnections => "least_connections",
            Strategy::Random => "random",
            Strategy::ConsistentHash => "consistent_hash",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategy_names_round_trip() {
        for name in Strategy::NAMES.split(", ") {
            let strategy = Strategy::from_name(name).expect("every listed name parses");
            assert_eq!(strategy.name(), name);
        }
        assert_eq!(Strategy::from_name("fastest"), None);
    }
}
