#!/usr/bin/env bash
# The firmware's linker (firmware/.cargo/config.toml): flip-link where it is installed
# (`cargo install flip-link`, seconds), else rust-lld as usual. flip-link puts the stack below the
# statics, so an overflow faults at the bottom of RAM instead of silently corrupting them.
# PERCH_FLIP_LINK=0 skips it (build.rs relinks when that changes).
#
# rustc puts its rust-lld on the PATH of the linker it starts and, as for any linker name it does
# not know, passes `-flavor gnu` first (not to one named `link`: hence this file's name).
if [ "${PERCH_FLIP_LINK:-1}" != 0 ] && command -v flip-link >/dev/null; then
  exec flip-link "$@"
fi
exec rust-lld "$@"
