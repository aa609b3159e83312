//! The order a pool's waiting requests are served and shed in: by priority, then by arrival.
//! Plain data, no locking or waking (`gate.rs` does both): a queue per priority, each in
//! arrival order, so serving reads from the front and eviction takes from the back.

use std::collections::VecDeque;

use crate::config::Priority;

/// Waiting items of type `T`, each numbered by arrival.
#[derive(Debug)]
pub(super) struct Queue<T> {
    /// Per priority (`Priority::index`), oldest first; numbers ascend within each.
    classes: [VecDeque<(u64, T)>; 4],
    next: u64,
    len: usize,
}

/// What serving does with the item it is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Leave it waiting and look at the next one.
    Keep,
    /// Take it out of the queue and look at the next one.
    Remove,
    /// Stop serving.
    Stop,
}

impl<T> Default for Queue<T> {
    fn default() -> Queue<T> {
        Queue {
            classes: Default::default(),
            next: 0,
            len: 0,
        }
    }
}

impl<T> Queue<T> {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Adds `item` behind every other of its priority; returns its number.
    pub(super) fn push(&mut self, priority: Priority, item: T) -> u64 {
        let number = self.next;
        self.next += 1;
        self.classes[priority.index()].push_back((number, item));
        self.len += 1;
        number
    }

    /// Takes out the item numbered `number`, if it is still waiting.
    pub(super) fn remove(&mut self, priority: Priority, number: u64) -> Option<T> {
        let class = &mut self.classes[priority.index()];
        let at = class.binary_search_by_key(&number, |(n, _)| *n).ok()?;
        self.len -= 1;
        class.remove(at).map(|(_, item)| item)
    }

    /// Takes out the item to shed so that one of `priority` may wait instead: the most
    /// recently queued of the lowest priority below it.
    pub(super) fn evict_below(&mut self, priority: Priority) -> Option<(Priority, T)> {
        let lower = Priority::ALL.into_iter().take_while(|p| *p < priority);
        for class in lower {
            if let Some((_, item)) = self.classes[class.index()].pop_back() {
                self.len -= 1;
                return Some((class, item));
            }
        }
        None
    }

    /// Shows `decide` every item in the order they are served (highest priority first, oldest
    /// first within one) until it says stop, taking out those it says to.
    pub(super) fn serve(&mut self, mut decide: impl FnMut(Priority, &mut T) -> Step) {
        for priority in Priority::ALL.into_iter().rev() {
            let class = &mut self.classes[priority.index()];
            let mut at = 0;
            while at < class.len() {
                match decide(priority, &mut class[at].1) {
                    Step::Keep => at += 1,
                    Step::Remove => {
                        class.remove(at);
                        self.len -= 1;
                    }
                    Step::Stop => return,
                }
            }
        }
    }

    /// Takes out every item.
    pub(super) fn drain(&mut self) -> Vec<(Priority, T)> {
        self.len = 0;
        let mut all = Vec::new();
        for priority in Priority::ALL {
            all.extend(
                self.classes[priority.index()]
                    .drain(..)
                    .map(|(_, item)| (priority, item)),
            );
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Priority::*;

    fn served(queue: &mut Queue<&'static str>) -> Vec<&'static str> {
        let mut order = Vec::new();
        queue.serve(|_, item| {
            order.push(*item);
            Step::Remove
        });
        order
    }

    #[test]
    fn serves_by_priority_then_arrival() {
        let mut queue = Queue::default();
        for (priority, name) in [
            (Low, "low1"),
            (Normal, "normal1"),
            (Critical, "critical1"),
            (Low, "low2"),
            (High, "high1"),
            (Critical, "critical2"),
        ] {
            queue.push(priority, name);
        }
        assert_eq!(
            served(&mut queue),
            ["critical1", "critical2", "high1", "normal1", "low1", "low2"]
        );
        assert_eq!(queue.len(), 0);
    }

    #[test]
    fn eviction_takes_the_newest_of_the_lowest_priority_below() {
        let mut queue = Queue::default();
        queue.push(Normal, "normal1");
        queue.push(Low, "low1");
        queue.push(Low, "low2");
        queue.push(Normal, "normal2");
        assert_eq!(queue.evict_below(High), Some((Low, "low2")));
        assert_eq!(queue.evict_below(High), Some((Low, "low1")));
        assert_eq!(queue.evict_below(High), Some((Normal, "normal2")));
        assert_eq!(queue.evict_below(Normal), None, "nothing below normal");
        assert_eq!(queue.evict_below(Low), None);
        assert_eq!(queue.len(), 1);
    }

    #[test]
    fn removal_by_number_keeps_the_rest_in_order() {
        let mut queue = Queue::default();
        let first = queue.push(Normal, "a");
        let second = queue.push(Normal, "b");
        queue.push(Normal, "c");
        assert_eq!(queue.remove(Normal, second), Some("b"));
        assert_eq!(queue.remove(Normal, second), None, "already out");
        assert_eq!(queue.remove(High, first), None, "numbers are per priority");
        assert_eq!(served(&mut queue), ["a", "c"]);
    }

    #[test]
    fn serving_can_keep_and_stop() {
        let mut queue = Queue::default();
        for name in ["a", "b", "c", "d"] {
            queue.push(Normal, name);
        }
        let mut seen = 0;
        queue.serve(|_, item| {
            seen += 1;
            match *item {
                "a" => Step::Keep,
                "b" => Step::Remove,
                _ => Step::Stop,
            }
        });
        assert_eq!(seen, 3);
        assert_eq!(served(&mut queue), ["a", "c", "d"]);
    }
}
