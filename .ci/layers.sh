#!/usr/bin/env bash
# The crate's layering: each top-level module of src/ may use (by a `crate::` path) only modules
# of the layers listed before its own; leaves use nothing else in the crate. Prints what each
# module uses, and fails on a use that breaks the order, on a module no layer lists, and on a
# `crate::Name` path (a root re-export hides which module a type comes from).
set -euo pipefail
cd "$(dirname "$0")/.."

# Lowest first. The first line is the leaves.
layers=(
  "allocator clock arena names pause path stream"
  "http1"
  "config"
  "telemetry"
  "body"
  "upstream"
  "proxy"
  "downstream"
  "control"
  "app"
)

declare -A rank
for i in "${!layers[@]}"; do
  for module in ${layers[$i]}; do
    rank[$module]=$i
  done
done

# The top-level modules `crate::` paths in these files name: `crate::a::..` and each path of a
# `crate::{a, b::c}` group. Line comments are dropped first; a `crate::Name` is printed as `Name`.
uses() {
  perl -0777 -ne '
    s{//[^\n]*}{}g;
    my %seen;
    while (/crate::(\{|[A-Za-z_][A-Za-z0-9_]*)/g) {
      if ($1 ne "{") { $seen{$1} = 1; next; }
      my ($depth, $start, $i) = (1, pos($_), pos($_));
      while ($depth > 0 && $i < length) {
        my $c = substr($_, $i++, 1);
        $depth++ if $c eq "{";
        $depth-- if $c eq "}";
      }
      my $group = substr($_, $start, $i - $start - 1);
      1 while $group =~ s/\{[^{}]*\}//g;
      $seen{$_} = 1 for grep { length } map { (split /::/)[0] =~ s/\s//gr } split /,/, $group;
    }
    print "$_\n" for grep { $_ ne "self" } keys %seen;
  ' "$@" | sort -u
}

failed=0
modules=$(find src -mindepth 1 -maxdepth 1 \( -name '*.rs' -o -type d \) \
  ! -name lib.rs ! -name main.rs -printf '%f\n' | sed 's/\.rs$//' | sort)
for module in $modules; do
  if [ -z "${rank[$module]+set}" ]; then
    echo "FAIL $module: in no layer (add it to .ci/layers.sh)"
    failed=1
    continue
  fi
  files=$(find "src/$module" "src/$module.rs" -name '*.rs' 2>/dev/null || true)
  used=()
  for other in $(uses $files); do
    [ "$other" = "$module" ] && continue
    used+=("$other")
    if [[ "$other" =~ ^[A-Z] ]]; then
      echo "FAIL $module: crate::$other (name the module it is defined in)"
      failed=1
    elif [ -z "${rank[$other]+set}" ]; then
      echo "FAIL $module: uses $other, in no layer"
      failed=1
    elif [ "${rank[$module]}" -eq 0 ] || [ "${rank[$other]}" -ge "${rank[$module]}" ]; then
      echo "FAIL $module (layer ${rank[$module]}) uses $other (layer ${rank[$other]})"
      failed=1
    fi
  done
  echo "$module (layer ${rank[$module]}): ${used[*]:-nothing}"
done
exit $failed
