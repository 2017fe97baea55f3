#!/bin/sh
# Run a workload, then spread its tasks (threads and child processes) over CPUs 0 and 1: the
# first task (which only waits) on CPU 1, the others alternating. This host packs a process's
# tasks onto one vCPU; pinning makes them run in parallel. Pins again at 5, 15 and 30 ms so
# that tasks created late are caught. PIN_LOG=FILE appends one line per pinning.
"$@" &
pid=$!
for delay in 0.005 0.01 0.015; do
  sleep $delay
  i=1
  for p in $pid $(pgrep -P $pid); do
    for t in $(ls /proc/$p/task 2>/dev/null); do
      taskset -p -c $((i % 2)) $t >/dev/null 2>&1
      [ -n "$PIN_LOG" ] && echo "$delay $p/$t -> $((i % 2))" >> "$PIN_LOG"
      i=$((i + 1))
    done
  done
done
wait $pid
