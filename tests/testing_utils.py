"""Helpers for the test-suite: tiny random models built from a config, calibration rows, skip markers."""

import importlib.util
import socket

import pytest
import torch

VOCAB = 128


def make_tiny_model(arch: str = "llama", num_layers: int = 2, seed: int = 0, dtype=torch.float32, **overrides):
    """A seeded tiny causal LM built from a config (nothing from the Hub)."""
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
        Qwen3Config,
        Qwen3ForCausalLM,
    )

    common = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
    )
    common.update(overrides)
    classes = {
        "llama": (LlamaConfig, LlamaForCausalLM),
        "qwen2": (Qwen2Config, Qwen2ForCausalLM),
        "qwen3": (Qwen3Config, Qwen3ForCausalLM),
    }
    config_cls, model_cls = classes[arch]
    if arch == "qwen3":
        common.setdefault("head_dim", 16)
    torch.manual_seed(seed)
    model = model_cls(config_cls(**common)).to(dtype)
    model.eval()
    return model


def make_calibration(num_rows: int = 6, seq_len: int = 24, vocab_size: int = VOCAB, seed: int = 1, ragged=False):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(num_rows):
        n = seq_len - (i % 3) * 5 if ragged else seq_len
        rows.append(torch.randint(0, vocab_size, (n,), generator=g).tolist())
    return rows


def stop_after(layer: int):
    """A pruner callback that stops the run after decoder layer `layer` (as an interruption would)."""
    from hf_ssgr.pruning.callbacks import PrunerCallback

    class StopAfter(PrunerCallback):
        def on_layer_end(self, config, state, control, **kwargs):
            if kwargs["layer_index"] == layer:
                control.should_stop = True

    return StopAfter()


def linear_weights(model) -> dict:
    return {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def free_port() -> int:
    """A free local TCP port, for the rendezvous of a two-process launch."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require_module(name: str):
    return pytest.mark.skipif(importlib.util.find_spec(name) is None, reason=f"{name} is not installed")


require_torch_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


R1_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}<|User|>{{ message['content'] }}"
    "{% elif message['role'] == 'assistant' %}<|Assistant|>{{ message['content'] }}<|end|>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|Assistant|><think>\n{% endif %}"
)


def make_char_tokenizer(chat_template: str | None = R1_CHAT_TEMPLATE):
    """An offline character-level tokenizer (≈100 printable characters) with an R1-style chat template.

    `<think>`/`</think>` are ordinary added tokens (not special), as in DeepSeek-R1-Distill; `<|end|>` is EOS.
    """
    import string

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|pad|>", "<|end|>", "<|User|>", "<|Assistant|>"]
    chars = [c for c in string.printable if c not in "\x0b\x0c"]
    vocab = {t: i for i, t in enumerate(specials + ["<think>", "</think>"] + chars)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="?"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|end|>")
    fast.add_special_tokens({"additional_special_tokens": ["<|User|>", "<|Assistant|>"]})
    fast.add_tokens(["<think>", "</think>"])
    if chat_template is not None:
        fast.chat_template = chat_template
    return fast


class ScriptedEngine:
    """A generation engine with scripted replies, to test selection end to end with known correctness.

    `script(problem_text, sample_index) -> (reply_text, finish_reason)`. Replies are encoded with the tokenizer and
    end with EOS, like real ones. Counts the prompts and samples it was asked for.
    """

    name = "scripted"

    def __init__(self, tokenizer, script, problems):
        self.tokenizer, self.script, self.problems = tokenizer, script, problems
        self.calls = 0
        self.samples_generated = 0
        self.issued: dict[str, int] = {}
        self.fail_after: int | None = None

    def _problem_of(self, prompt_ids):
        text = self.tokenizer.decode(prompt_ids)
        for p in self.problems:
            if p in text:
                return p
        raise AssertionError("prompt does not contain a known problem")

    def generate(self, prompts, num_samples, seed, sample_seeds=None):
        from hf_ssgr.calibration.engines import Sample

        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated crash")
        self.calls += 1
        out = []
        for prompt in prompts:
            problem = self._problem_of(prompt)
            samples = []
            for _ in range(num_samples):
                j = self.issued.get(problem, 0)
                self.issued[problem] = j + 1
                text, finish = self.script(problem, j)
                ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
                if finish == "eos":
                    ids = ids + [self.tokenizer.eos_token_id]
                samples.append(Sample(ids, finish))
                self.samples_generated += 1
            out.append(samples)
        return out


MOE_FAMILIES = ("qwen3_moe", "qwen2_moe", "qwen3_next", "mixtral", "deepseek_v3", "gpt_oss", "glm4_moe",
                "minimax_m2", "olmoe")  # fmt: skip


def make_tiny_moe(family: str = "qwen3_moe", num_layers: int = 2, seed: int = 0, dtype=torch.float32, **overrides):
    """A seeded tiny mixture-of-experts causal LM of one transformers family, built from a config: hidden 64, 8
    experts of intermediate 32 (top 2), so that every expert sees tokens of a short calibration set."""
    from transformers import AutoConfig, AutoModelForCausalLM

    common = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        moe_intermediate_size=32,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        num_experts_per_tok=2,
    )
    extra = {
        "qwen3_moe": dict(num_experts=8, decoder_sparse_step=1, mlp_only_layers=[]),
        "qwen2_moe": dict(num_experts=8, shared_expert_intermediate_size=64, decoder_sparse_step=1),
        "qwen3_next": dict(
            num_experts=8,
            shared_expert_intermediate_size=64,
            decoder_sparse_step=1,
            layer_types=[("linear_attention", "full_attention")[i % 2] for i in range(num_layers)],
            linear_num_value_heads=4,
            linear_num_key_heads=2,
            linear_key_head_dim=16,
            linear_value_head_dim=16,
            linear_conv_kernel_dim=4,
            partial_rotary_factor=0.5,
        ),
        "mixtral": dict(num_local_experts=8, intermediate_size=32),
        "deepseek_v3": dict(
            n_routed_experts=8,
            n_shared_experts=1,
            first_k_dense_replace=1,
            n_group=2,
            topk_group=1,
            head_dim=8,
            num_key_value_heads=4,
            kv_lora_rank=16,
            q_lora_rank=32,
            qk_rope_head_dim=8,
            qk_nope_head_dim=16,
            v_head_dim=16,
            routed_scaling_factor=1.0,
        ),
        "gpt_oss": dict(
            num_local_experts=8,
            intermediate_size=32,
            sliding_window=16,
            layer_types=[("sliding_attention", "full_attention")[i % 2] for i in range(num_layers)],
        ),
        "glm4_moe": dict(
            n_routed_experts=8,
            n_shared_experts=1,
            first_k_dense_replace=0,
            n_group=2,
            topk_group=1,
            partial_rotary_factor=0.5,
            routed_scaling_factor=1.0,
        ),
        "minimax_m2": dict(num_local_experts=8, intermediate_size=32, rotary_dim=8),
        "olmoe": dict(num_experts=8, intermediate_size=32),
    }[family]
    common.update(extra)
    common.update(overrides)
    config = AutoConfig.for_model(family, **common)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).to(dtype)
    with torch.no_grad():  # the routers of some families start at zero: give them random weights
        for name, p in model.named_parameters():
            if p.ndim >= 2 and float(p.abs().sum()) == 0:
                p.normal_(0, 0.02)
            elif name.endswith("e_score_correction_bias"):
                p.zero_()
    model.eval()
    return model


def install_plugin(tmp_path, monkeypatch, module: str, source: str, group: str, entry: str) -> None:
    """A one-module package on `sys.path` that declares `entry` (`name = module:Object`) in the entry-point `group`,
    as an installed plug-in would (a `dist-info` folder beside the module)."""
    (tmp_path / f"{module}.py").write_text(source)
    info = tmp_path / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{entry}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
