# One-epoch trainings of the cpu and lsg-cpu recipes on 10,240 CIFAR-10 images, alternating two source trees:
#   START=/path/to/clone-at-16abe72/src NOW=/path/to/clone-at-HEAD/src DATA=/path/to/cifar bash recipes_ab.sh
# Prints: tree, recipe, epoch seconds, train accuracy, test accuracy.
RUN=$(mktemp -d)
for i in 1 2; do
  for src in "$START" "$NOW"; do
    for recipe in cpu lsg-cpu; do
      rm -rf "$RUN/run"
      PYTHONPATH=$src spikeforge train --recipe $recipe --data-root "$DATA" --run-dir "$RUN/run" data.subset=10240 \
        epochs=1 progress=false 2>/dev/null | grep "epoch 1" | awk -v t="$src" -v r=$recipe '{print t, r, $(NF-3), $13, $19}'
    done
  done
done
rm -rf "$RUN"
