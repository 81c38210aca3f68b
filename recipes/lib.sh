# Shell helpers of the end-to-end runs (recipes/demo/run.sh, recipes/methods/run.sh); source it with OUT and NAME set.

# step OUT_FILE CMD...: run CMD once per distinct command line, its stdout to OUT_FILE and its stderr to OUT_FILE.log;
# a finished step (OUT_FILE.done holding the same command) is skipped.
step() {
  local out=$1 t0=$SECONDS; shift
  [ -f "$out.done" ] && [ "$(cat "$out.done")" = "$*" ] && return 0
  mkdir -p "$(dirname "$out")"
  "$@" > "$out.tmp" 2> "$out.log" || { local rc=$?; tail -n 5 "$out.log" >&2; echo "$NAME: failed ($rc): $*" >&2; return $rc; }
  mv "$out.tmp" "$out" && echo "$*" > "$out.done"
  echo "$NAME: $(( SECONDS - t0 )) s  ${out#"$OUT"/}" >&2
}

# pair FUNCTION ARG...: FUNCTION ARG for every ARG, all at once; fails if any failed.
pair() {
  local f=$1 pids=() rc=0 p; shift
  for a in "$@"; do "$f" "$a" & pids+=($!); done
  for p in "${pids[@]}"; do wait "$p" || rc=$?; done
  return $rc
}
