#!/usr/bin/env bash
# One set-up step of the Makefile, quiet unless it fails: its output is appended to LOG and the
# terminal gets one line ("  what ... done (12 s)"). On failure: the log's last lines, one line
# naming the full log, and the step's exit status.
# usage: scripts/setup_step.sh LOG "what it does" COMMAND [ARG...]
set -u
log=$1
what=$2
shift 2
printf '  %s ... ' "$what"
start=$(date +%s)
echo "\$ $*" >> "$log"
"$@" >> "$log" 2>&1
status=$?
if [ "$status" -eq 0 ]; then
    echo "done ($(( $(date +%s) - start )) s)"
    exit 0
fi
echo "failed"
echo "---- the last 25 lines of $log ----" >&2
tail -n 25 "$log" >&2
echo "error: set-up step '$what' failed (exit status $status); its full output is in $log" >&2
exit "$status"
