#!/bin/bash
# The README's commands on every model stranger_train.py wrote to OUT (either set): inspect, audit, defend (with the
# real trigger only to measure), the recommended known-trigger chain. Reports in OUT/runs/NAME.
set -u
OUT=${1:?usage: judge.sh OUT}
T1="patch:size=3,pos=24,24,value=1"
for M in "$OUT"/models/*; do
  n=$(basename "${M%.*}"); o="$OUT/runs/$n"; mkdir -p "$o"
  suffix="${M##*.}"; D="$OUT/def.npz"; E="$OUT/eval.npz"; X=(); L=(); T=(-t "$T1"); ET=(--eval-trigger "$T1")
  case $n in
    *noch) D="$OUT/def_noch.npz"; E="$OUT/eval_noch.npz";;
    *rescale) D="$OUT/def_f255.npz"; E="$OUT/eval_f255.npz"; T=(-t "patch:size=3,pos=24,24,value=255"); ET=(--eval-trigger "patch:size=3,pos=24,24,value=255");;
    *flatin) D="$OUT/def_flat.npz"; E="$OUT/eval_flat.npz";;
    *custom|*sub) L=(--custom-objects "$(dirname "$0")/custom_layers.py");;
    *resize3) X=(--resize); T=(--trigger-data "$OUT/def_trig.npz"); ET=(--eval-trigger-data "$OUT/eval_trig.npz");;
  esac
  kerasaudit inspect "$M" "${L[@]}" > "$o/inspect.out" 2>&1
  kerasaudit audit "$M" --data "$D" "${X[@]}" "${L[@]}" --report "$o/audit.json" --force > "$o/audit.out" 2> "$o/audit.err"
  echo "$n audit exit $?"
  [[ $n == clean_* ]] && continue
  kerasaudit defend "$M" --data "$D" "${X[@]}" "${L[@]}" -o "$o/defended.$suffix" --eval-data "$E" "${ET[@]}" \
    --eval-target 2 --report "$o/defend.json" --force > "$o/defend.out" 2> "$o/defend.err"
  echo "$n defend exit $?"
  kerasaudit prune "$M" -d "$D" "${X[@]}" "${L[@]}" --eval-data "$E" "${T[@]}" --target 2 -c linf-trigger --ratio auto \
    --fine-tune-epochs 20 --unlearn --distill 0.8 --extend-to 160 -o "$o/fixed.$suffix" \
    --report "$o/prune.json" --force > "$o/prune.out" 2> "$o/prune.err"
  echo "$n prune exit $?"
done
