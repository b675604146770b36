"""Train the embedded tiny reasoning model (`hf_ssgr.tiny_reasoner.MODEL_PATH`), seeded and reproducible.

    python scripts/train_tiny_reasoner.py                      # 2 CPU cores: about 55 minutes (measured)
    python scripts/train_tiny_reasoner.py --device cuda        # a GPU: a few minutes
    python scripts/train_tiny_reasoner.py --teacher varied --init-from tiny --steps 1200 \\
        --lr 1e-3 --min-lr 1e-4 --warmup 50 --max-new-tokens 320 --out src/hf_ssgr/tiny_reasoner/model_varied
                                                               # the varied reasoner (VARIED_MODEL_PATH)

A Llama-architecture model (hidden 192, 4 layers, 4 heads, tied embeddings, ~2.4M parameters) learns R1-style
replies to the synthetic arithmetic word problems of `hf_ssgr.tiny_reasoner`: the prompt is rendered with the
pipeline's own chat template and instruction (`hf_ssgr.calibration.prompts.render_prompt`), the reply is the step-by-step
working, `</think>`, and `\\boxed{answer}`. The loss covers reply tokens only; a tenth of each batch is plain text
from the corpus (loss on every token). AdamW, cosine schedule with warm-up, bf16 autocast.

`--teacher varied` trains on the stochastic teacher's replies (`hf_ssgr.tiny_reasoner.varied_reasoning_text`:
restatements, checks, slips caught or not, longer routes, shortcuts), so that the model's chains of thought vary
between samples; `--init-from` starts from a trained model's weights (same tokenizer) instead of random ones. With
the varied teacher, sequences are drawn four batches at a time and batched by length (less padding).

At the end the script measures accuracy on the held-out problems per level (greedy and sampled at T=0.6,
top-p 0.95), and writes the model (float32 safetensors), tokenizer, generation config and `training_log.json`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

import torch  # noqa: E402

from hf_ssgr.calibration.prompts import render_prompt  # noqa: E402
from hf_ssgr.tiny_reasoner import (  # noqa: E402
    LEVELS,
    MODEL_PATH,
    VARIED_MODEL_PATH,
    build_tokenizer,
    make_problem,
    reasoning_text,
    split_of,
    test_problems,
    text_corpus,
    varied_reasoning_text,
)


class Encoder:
    """Token ids of prompt + reply, fast: the chat-template text around the problem is encoded once (checked equal
    to encoding the whole rendered prompt), and problems and replies are encoded in batches."""

    def __init__(self, tok, reply=None):
        self.tok = tok
        self.reply = reply or reasoning_text  # problem -> reply text
        marker = "\x00PROBLEM\x00"
        left, right = render_prompt(tok, marker).split(marker)
        self.left = tok(left, add_special_tokens=False)["input_ids"]
        self.right = tok(right, add_special_tokens=False)["input_ids"]

    def __call__(self, problems):
        tok = self.tok
        bodies = tok([p.problem for p in problems], add_special_tokens=False)["input_ids"]
        replies = tok([self.reply(p) for p in problems], add_special_tokens=False)["input_ids"]
        out = []
        for body, reply in zip(bodies, replies):
            prompt = self.left + body + self.right
            reply = reply + [tok.eos_token_id]
            out.append((prompt + reply, [-100] * len(prompt) + reply))
        return out

    def check(self, problems):
        for p, (ids, labels) in zip(problems, self(problems)):
            whole = self.tok(render_prompt(self.tok, p.problem), add_special_tokens=False)["input_ids"]
            assert ids[: len(whole)] == whole and labels.count(-100) == len(whole), p.problem


def make_batch(encoder, tok, rng, texts, batch_size, text_fraction, device, pool=None):
    """One batch of (ids, labels). With `pool` (a list), sequences are drawn four batches at a time, sorted by
    length and handed out a batch at a time in random order (variable-length replies waste less padding)."""
    if pool is not None:
        if not pool:
            seqs = _draw_sequences(encoder, tok, rng, texts, 4 * batch_size, text_fraction)
            seqs.sort(key=lambda s: len(s[0]))
            chunks = [seqs[i : i + batch_size] for i in range(0, len(seqs), batch_size)]
            rng.shuffle(chunks)
            pool.extend(chunks)
        return _collate(pool.pop(), tok, device)
    return _collate(_draw_sequences(encoder, tok, rng, texts, batch_size, text_fraction), tok, device)


def _draw_sequences(encoder, tok, rng, texts, batch_size, text_fraction):
    problems, seqs = [], []
    for _ in range(batch_size):
        if rng.random() < text_fraction:
            ids = tok(rng.choice(texts), add_special_tokens=False)["input_ids"][:64] + [tok.eos_token_id]
            seqs.append((ids, list(ids)))
            continue
        while True:
            p = make_problem(rng.choice(sorted(LEVELS)), rng)
            if split_of(p.problem) == "train":
                break
        problems.append(p)
    return seqs + encoder(problems)


def _collate(seqs, tok, device):
    batch_size = len(seqs)
    width = max(len(s) for s, _ in seqs)
    ids = torch.full((batch_size, width), tok.pad_token_id, dtype=torch.long)
    labels = torch.full((batch_size, width), -100, dtype=torch.long)
    for i, (s, lab) in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        labels[i, : len(s)] = torch.tensor(lab)
    # right padding under a causal mask: real tokens never attend to the pads after them, so no attention mask
    return ids.to(device), labels.to(device), int((labels != -100).sum()), sum(len(s) for s, _ in seqs)


@torch.no_grad()
def accuracy_per_level(model, tok, problems, temperature, samples, seed, device, batch=64, max_new_tokens=128):
    from hf_ssgr.verification import extract_answer

    model.eval()
    eos = tok.eos_token_id
    per_level: dict[int, list[float]] = {}
    lengths = []
    level_lengths: dict[int, list[int]] = {}
    cvs = []
    for start in range(0, len(problems), batch):
        group = problems[start : start + batch]
        prompts = [tok(render_prompt(tok, p.problem), add_special_tokens=False)["input_ids"] for p in group]
        width = max(len(x) for x in prompts)
        ids = torch.full((len(group), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, x in enumerate(prompts):
            ids[i, width - len(x) :] = torch.tensor(x)
            mask[i, width - len(x) :] = 1
        torch.manual_seed(seed + start)
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            top_p=0.95 if temperature > 0 else None,
            top_k=0,
            max_new_tokens=max_new_tokens,
            num_return_sequences=samples,
            eos_token_id=eos,
            pad_token_id=tok.pad_token_id,
        )[:, width:].tolist()
        for i, p in enumerate(group):
            replies, reasons, mine = [], [], []
            for seq in out[i * samples : (i + 1) * samples]:
                cut = seq.index(eos) if eos in seq else None
                body = seq[:cut] if cut is not None else seq
                replies.append(tok.decode(body, skip_special_tokens=True))
                reasons.append("eos" if cut is not None else "length")
                mine.append(len(body) + (cut is not None))
            lengths += mine
            level_lengths.setdefault(p.level, []).extend(mine)
            if len(mine) > 1:
                mean = sum(mine) / len(mine)
                cvs.append((sum((x - mean) ** 2 for x in mine) / len(mine)) ** 0.5 / mean)
            # integer answers: the boxed text after </think> must equal the answer (a truncated reply is wrong)
            correct = [extract_answer(r, f) == str(p.answer) for r, f in zip(replies, reasons)]
            per_level.setdefault(p.level, []).append(sum(correct) / len(correct))
    result = {f"L{lv}": round(sum(v) / len(v), 4) for lv, v in sorted(per_level.items())}
    result["all"] = round(sum(sum(v) for v in per_level.values()) / sum(len(v) for v in per_level.values()), 4)
    result["mean_length"] = round(sum(lengths) / len(lengths), 1)
    result["mean_length_per_level"] = {f"L{lv}": round(sum(v) / len(v), 1) for lv, v in sorted(level_lengths.items())}
    if samples > 1:  # how much one problem's samples differ: in length, and in correctness
        cvs.sort()
        result["median_length_cv"] = round(cvs[len(cvs) // 2], 3)
        ratios = [r for v in per_level.values() for r in v]
        result["share_mixed_correctness"] = round(sum(0 < r < 1 for r in ratios) / len(ratios), 3)
    return result


def evaluate_model(model, tok, args):
    problems = test_problems(args.eval_per_level)
    t1 = time.perf_counter()
    greedy = accuracy_per_level(model, tok, problems, 0.0, 1, args.seed, args.device,
                                max_new_tokens=args.max_new_tokens)  # fmt: skip
    sampled = accuracy_per_level(model, tok, problems, 0.6, args.eval_samples, args.seed, args.device,
                                 max_new_tokens=args.max_new_tokens)  # fmt: skip
    print(f"greedy: {greedy}\nsampled (T=0.6, top-p 0.95, {args.eval_samples} samples): {sampled}", flush=True)
    return greedy, sampled, time.perf_counter() - t1


def eval_only(args):
    """Measure the held-out accuracy of a saved model and record it in its training_log.json."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(args.out, dtype=torch.float32).to(args.device)
    tok = AutoTokenizer.from_pretrained(args.out)
    greedy, sampled, seconds = evaluate_model(model, tok, args)
    path = os.path.join(args.out, "training_log.json")
    log = json.load(open(path)) if os.path.exists(path) else {}
    log.update({"accuracy_greedy": greedy, "accuracy_sampled": sampled, "eval_seconds": round(seconds, 1),
                "held_out_problems_per_level": args.eval_per_level, "eval_torch": torch.__version__})  # fmt: skip
    with open(path, "w") as f:
        json.dump(log, f, indent=2)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument(
        "--arch",
        default="llama",
        choices=("llama", "qwen3_moe"),
        help="llama: the dense model; qwen3_moe: the mixture-of-experts one (8 experts, top 2)",
    )
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--min-lr", type=float, default=3e-4)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--text-fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--eval-per-level", type=int, default=100)
    ap.add_argument("--eval-samples", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=128, help="generation limit of the final evaluation")
    ap.add_argument("--teacher", default="terse", choices=("terse", "varied"),
                    help="terse: one line per step (the first model); varied: the stochastic teacher")  # fmt: skip
    ap.add_argument("--init-from", default=None, help="start from this trained model (a path, or tiny)")
    ap.add_argument("--out", default=None, help="default: the embedded model of the chosen --teacher and --arch")
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--eval-only", action="store_true", help="only measure the saved model at --out")
    args = ap.parse_args()
    if args.out is None:
        args.out = VARIED_MODEL_PATH if args.teacher == "varied" else MODEL_PATH
    if args.eval_only:
        return eval_only(args)
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers import AutoModelForCausalLM, GenerationConfig, LlamaConfig, Qwen3MoeConfig

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    tok = build_tokenizer()
    config = (
        Qwen3MoeConfig(
            vocab_size=len(tok),
            hidden_size=128,
            intermediate_size=352,
            moe_intermediate_size=176,
            num_experts=8,
            num_experts_per_tok=2,
            norm_topk_prob=True,
            output_router_logits=True,  # the load-balancing loss, so that every expert is used
            router_aux_loss_coef=0.01,
            decoder_sparse_step=1,
            mlp_only_layers=[],
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=4,
            head_dim=32,
            max_position_embeddings=512,
            tie_word_embeddings=True,
            bos_token_id=None,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
        if args.arch == "qwen3_moe"
        else LlamaConfig(
            vocab_size=len(tok),
            hidden_size=192,
            intermediate_size=768,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=512,
            tie_word_embeddings=True,
            bos_token_id=None,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
    )
    config._attn_implementation = "eager"  # faster than sdpa for these tiny heads on CPU (measured)
    if args.init_from:
        from hf_ssgr.utils import resolve_model

        model = AutoModelForCausalLM.from_pretrained(resolve_model(args.init_from), dtype=torch.float32)
        if len(tok) != model.config.vocab_size:
            raise SystemExit(f"--init-from {args.init_from}: vocabulary {model.config.vocab_size} != {len(tok)}.")
        model.config._attn_implementation = "eager"
        model = model.to(args.device)
    else:
        model = AutoModelForCausalLM.from_config(config).to(args.device)
    teacher_rng = random.Random(args.seed + 2)
    reply = (lambda p: varied_reasoning_text(p, teacher_rng)[0]) if args.teacher == "varied" else None
    encoder = Encoder(tok, reply)
    pool = [] if args.teacher == "varied" else None
    encoder.check([make_problem(lv, random.Random(lv)) for lv in sorted(LEVELS)])
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{n_params / 1e6:.2f}M parameters, vocabulary {len(tok)}", flush=True)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
    )

    def lr_at(step):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        t = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * t))

    texts = text_corpus(4000, seed=args.seed + 1)
    device_type = "cuda" if str(args.device).startswith("cuda") else "cpu"
    model.train()
    t0 = time.perf_counter()
    tokens = 0
    history = []
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        ids, labels, _, n_tokens = make_batch(
            encoder, tok, rng, texts, args.batch_size, args.text_fraction, args.device, pool
        )
        with torch.autocast(device_type, dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        tokens += n_tokens
        if (step + 1) % args.log_every == 0 or step == 0:
            elapsed = time.perf_counter() - t0
            history.append({"step": step + 1, "loss": round(loss.item(), 4), "seconds": round(elapsed, 1)})
            print(
                f"step {step + 1}/{args.steps} loss {loss.item():.4f} lr {lr_at(step):.2e} "
                f"{elapsed / 60:.1f} min {tokens / elapsed:.0f} tok/s",
                flush=True,
            )
    train_seconds = time.perf_counter() - t0

    model.config.output_router_logits = False  # generation needs no balancing loss (and it fails under generate)
    greedy = sampled = None
    eval_seconds = 0.0
    if args.eval_per_level > 0:
        greedy, sampled, eval_seconds = evaluate_model(model, tok, args)
    model = model.to("cpu").float()
    model.config._attn_implementation = "sdpa"
    model.generation_config = GenerationConfig(
        do_sample=True,
        temperature=0.6,
        top_p=0.95,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )  # no max_new_tokens: under stock lm-eval it would override the task's max_gen_toks (and warn every batch)
    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out)
    tok.save_pretrained(args.out)
    log = {
        "command": "python scripts/train_tiny_reasoner.py " + " ".join(sys.argv[1:]),
        "args": vars(args),
        "parameters": n_params,
        "train_seconds": round(train_seconds, 1),
        "eval_seconds": round(eval_seconds, 1),
        "tokens_seen": tokens,
        "held_out_problems_per_level": args.eval_per_level,
        "accuracy_greedy": greedy,
        "accuracy_sampled": sampled,
        "history": history,
        "torch": torch.__version__,
        "device": str(args.device) if device_type == "cpu" else torch.cuda.get_device_name(),
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }
    with open(os.path.join(args.out, "training_log.json"), "w") as f:
        json.dump(log, f, indent=2)
    print(f"saved to {args.out} ({train_seconds / 60:.1f} min of training)")


if __name__ == "__main__":
    main()
