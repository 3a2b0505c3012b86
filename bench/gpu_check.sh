#!/usr/bin/env bash
# GPU check for the scaling claims: each family validated in bf16 and fp16 against fp32 on one GPU, then
# causal LM fit with FSDP and validate under DDP on every GPU found against one GPU, with throughput; then the
# chunked loss against transformers' on one GPU (bench/gpu_check_chunked.py).
#   bash bench/gpu_check.sh            # on a machine with CUDA GPUs; under 8 minutes on one node
#   LIT_HF_TEST_DATA=/path/to/data bash bench/gpu_check.sh
# Without a GPU it says so and exits 0; `GPU_CHECK_CPU=1` runs the same comparisons on the CPU instead (slow
# models stay tiny, 2 processes), which is how the script itself is checked where no GPU is at hand.
# Prints one line per comparison ("ok" or "DIFF") and exits 1 if any differs beyond its tolerance.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
DATA=${LIT_HF_TEST_DATA:-$REPO/../shared/data}
WORK=$(mktemp -d -t lit_hf-gpu-check-XXXX)
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
PY=${PYTHON:-python}

GPUS=$($PY -c "import torch; print(torch.cuda.device_count())")
if [[ "$GPUS" == 0 && "${GPU_CHECK_CPU:-0}" != 1 ]]; then
  echo "gpu_check: no CUDA GPU found; nothing to check (GPU_CHECK_CPU=1 runs the CPU fallback)."
  exit 0
fi
if [[ "$GPUS" == 0 ]]; then
  ACCEL=cpu DEVICES=2 HALF=16-true BF16=bf16-true
  echo "gpu_check: CPU fallback: 2 processes, $HALF and $BF16 (a CPU has no fp16 autocast)"
else
  ACCEL=gpu DEVICES=$GPUS HALF=16-mixed BF16=bf16-mixed
  echo "gpu_check: $GPUS GPU(s): $($PY -c "import torch; print(torch.cuda.get_device_name(0))")"
fi
[[ -f "$DATA/SOURCES.md" ]] || { echo "gpu_check: test data not found at $DATA; set LIT_HF_TEST_DATA"; exit 2; }

$PY "$REPO/bench/gpu_check_models.py" "$DATA" "$WORK"  # tiny models from configs, real tokenizers
COMMON=(--trainer.accelerator=$ACCEL --trainer.enable_progress_bar=false --trainer.enable_model_summary=false)
CLM=(--model=lit_hf.tasks.CausalLMTask --model.model_name_or_path="$WORK/gpt2"
  --data=lit_hf.data.LanguageModelingDataModule --data.train_file="$DATA/wikitext/wiki_00" --data.block_size=128
  --data.validation_split_percentage=10 --data.batch_size=8 --data.eval_batch_size=8)
CLS=(--model=lit_hf.tasks.SequenceClassificationTask --model.model_name_or_path="$WORK/bert"
  --data=lit_hf.data.TextClassificationDataModule --data.task_name=cola --data.data_dir="$DATA/glue"
  --data.eval_batch_size=32)
MT=(--model=lit_hf.tasks.TranslationTask --model.model_name_or_path="$WORK/t5"
  --data=lit_hf.data.TranslationDataModule --data.validation_file="$DATA/wmt16/sample.json" --data.source_lang=en
  --data.target_lang=ro --data.max_target_length=16 --data.eval_batch_size=4)

run() {  # run NAME SUBCOMMAND ARGS...: one lit_hf run into $WORK/NAME, timed
  local name=$1 start=$SECONDS
  shift
  $PY -m lit_hf "$@" "${COMMON[@]}" --data.data_cache_dir="$WORK/cache" --trainer.default_root_dir="$WORK/$name" \
    >"$WORK/$name.log" 2>&1 || { echo "gpu_check: $name failed:"; tail -20 "$WORK/$name.log"; exit 1; }
  echo "gpu_check: $name took $((SECONDS - start)) s"
}

for family in CLM CLS MT; do
  declare -n args=$family
  run "$family-32" validate "${args[@]}" --trainer.devices=1 --trainer.precision=32-true
  for precision in "$BF16" "$HALF"; do
    run "$family-$precision" validate "${args[@]}" --trainer.devices=1 --trainer.precision="$precision"
    $PY "$REPO/bench/gpu_check_compare.py" "$family $precision vs 32-true" "$WORK/$family-32" "$WORK/$family-$precision" 0.01
  done
done
run CLM-fsdp fit "${CLM[@]}" --trainer.devices="$DEVICES" --trainer.strategy=fsdp --trainer.max_epochs=1 \
  --trainer.limit_train_batches=20 --model.optim.learning_rate=1e-3 --trainer.precision="$BF16"
grep -o "train/tokens_per_sec[^,}]*" "$WORK"/CLM-fsdp/lightning_logs/*/version_*/results.json | sed 's/^/gpu_check: fsdp /' || true
EXPORT=$(ls -d "$WORK"/CLM-fsdp/lightning_logs/*/version_*/huggingface)
run CLM-export validate "${CLM[@]}" --model.model_name_or_path="$EXPORT" --trainer.devices=1 --trainer.precision=32-true
run CLM-ddp validate "${CLM[@]}" --model.model_name_or_path="$EXPORT" --trainer.devices="$DEVICES" \
  --trainer.strategy=ddp --trainer.precision=32-true
$PY "$REPO/bench/gpu_check_compare.py" "validate of the FSDP export: $DEVICES processes vs 1" \
  "$WORK/CLM-export" "$WORK/CLM-ddp" 1e-5
# --model.chunked_loss (issue 22): GPT-2 small and a BLOOM-vocabulary model in bf16 on one GPU, transformers' loss
# against the chunked one: tokens/s, peak memory, MFU (prints figures; compares nothing, fails only if it crashes)
if [[ "$GPUS" == 0 ]]; then CHUNKED=(--tiny --steps 3 --warmup 1); else CHUNKED=(); fi
CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0} $PY "$REPO/bench/gpu_check_chunked.py" "${CHUNKED[@]}"
echo "gpu_check: done in $SECONDS s; logs in $WORK"
