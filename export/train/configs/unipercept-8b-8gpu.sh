#!/usr/bin/env bash
# UniPercept's two-stage recipe for an 8B InternVL-3 checkpoint on one node with 8 GPUs (80 GB or 40 GB each),
# PyTorch FSDP through torchrun. Memory arithmetic: export/train/README.md ("8B on 8 GPUs").
#
#   BASE=/models/InternVL3-8B DATA=/data RUN=/runs/unipercept bash export/train/configs/unipercept-8b-8gpu.sh
#
# Each rating file is mapped from its own scale (min=, max=) to 0-100: KonIQ and ISTA-10K are on 0-100,
# ArtiMuse-10K on 0-10 (its labels span 1.0-9.78). A rating outside a file's declared range stops the run.
#
# Re-running the script after a crash or a kill resumes each stage from its newest step checkpoint.
set -euo pipefail
BASE=${BASE:?set BASE to the starting checkpoint folder (original InternVL layout)}
DATA=${DATA:?set DATA to the folder holding the JSON files and image folders below}
RUN=${RUN:?set RUN to the output folder}
GPUS=${GPUS:-8}
LAUNCH=(torchrun --standalone --nproc-per-node "$GPUS")
resume_flag() { [ -d "$1/checkpoints" ] && echo --resume || true; }

# GRPO's batch: the paper (Sec. 5.1) trains "with a batch size of 128" and samples "n=8 responses per query", which
# reads two ways. VLM-R1, whose GRPO trainer UniPercept adapted, counts completions in its batch size:
#   GRPO_BATCH=completions (default): 128 completions = 16 prompts x 8 per step;
#   GRPO_BATCH=prompts:               128 prompts x 8 = 1,024 completions per step.
# Steps: 2 epochs over the RL data of the paper's Table 15 (~9K ArtiMuse + ~7K KonIQ + ~10K ISTA + ~30K VQA = ~56K).
GRPO_BATCH=${GRPO_BATCH:-completions}
GROUP=8
RL_PROMPTS=56000
case "$GRPO_BATCH" in
    completions) GRPO_PROMPTS=$((128 / GROUP)) GRPO_PER_GPU=1 ;;
    prompts) GRPO_PROMPTS=128 GRPO_PER_GPU=4 ;;
    *) echo "error: GRPO_BATCH must be completions or prompts, not '$GRPO_BATCH'" >&2; exit 2 ;;
esac
if (( GRPO_PROMPTS % (GRPO_PER_GPU * GPUS) != 0 )); then
    echo "error: $GRPO_PROMPTS prompts per step do not split over $GPUS GPUs x $GRPO_PER_GPU" >&2; exit 2
fi
GRPO_ACCUM=$((GRPO_PROMPTS / (GRPO_PER_GPU * GPUS)))
GRPO_STEPS=$((2 * RL_PROMPTS / GRPO_PROMPTS))

# Stage 1, domain-adaptive pre-training: full fine-tuning of projector + LLM, FSDP-sharded (26-30 GB per GPU,
# see the README). Global batch = 4 samples x 4 accumulation x 8 GPUs = 128 (the paper's batch size).
# --sigma 0: a rating's target is its score token, as the paper trains; --sigma 2 is the project's soft-label option.
"${LAUNCH[@]}" -m export.train.train --checkpoint "$BASE" --output "$RUN/stage1" $(resume_flag "$RUN/stage1") \
    --dataset json="$DATA/koniq_train.json",images="$DATA/koniq",axis=iqa,min=0,max=100 \
    --dataset json="$DATA/artimuse_train.json",images="$DATA/artimuse",axis=iaa,min=0,max=10 \
    --dataset json="$DATA/ista_train.json",images="$DATA/ista",axis=ista,min=0,max=100 \
    --dataset json="$DATA/perceptual_qa.json",images="$DATA/qa_images" \
    --train mlp1,llm --lr 1e-5 --warmup 100 --batch-size 4 --grad-accum 4 --steps 12500 \
    --sigma 0 --gradient-checkpointing --save-every 500 --keep-last 2 --workers 4

# Stage 2, task-aligned RL (GRPO): LoRA on the LLM, so the KL reference is the stage-1 model with the adapters off.
# G = 8 answers per prompt, beta = 0.001, clip 0.2 (the paper's settings); batch and steps from GRPO_BATCH above.
# --objective grpo is the standard clipped surrogate; --objective eq3 is the paper's Eq. 3 as printed (times r_i).
"${LAUNCH[@]}" -m export.train.grpo --checkpoint "$RUN/stage1" --output "$RUN/stage2" $(resume_flag "$RUN/stage2") \
    --dataset json="$DATA/koniq_train.json",images="$DATA/koniq",axis=iqa,min=0,max=100 \
    --dataset json="$DATA/artimuse_train.json",images="$DATA/artimuse",axis=iaa,min=0,max=10 \
    --dataset json="$DATA/ista_train.json",images="$DATA/ista",axis=ista,min=0,max=100 \
    --dataset json="$DATA/vqa_train.json",images="$DATA/vqa_images" \
    --train llm --lora-rank 64 --lr 1e-5 --batch-size "$GRPO_PER_GPU" --grad-accum "$GRPO_ACCUM" --group-size "$GROUP" \
    --beta 0.001 --clip 0.2 --objective grpo --steps "$GRPO_STEPS" --gradient-checkpointing --save-every 50 --keep-last 2 --workers 4
