import pytest
from testing_utils import make_tiny_model

from hf_ssgr.pruning.memory import GIB, estimate_prune_memory


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_weight_term_counts_the_model_parameters(arch):
    model = make_tiny_model(arch, num_layers=3)
    est = estimate_prune_memory(model.config, num_rows=4, tokens_per_row=32, dtype_bytes=4)
    params = sum(p.numel() for p in model.parameters())
    assert est.terms["W: model weights"] == pytest.approx(4 * params, rel=0.002)
    linear = sum(m.weight.numel() for n, m in model.named_modules() if ".layers." in n and hasattr(m, "in_features"))
    assert est.terms["R: restore_on_error copies (disk)"] == 4 * linear  # on disk: in neither total
    assert est.device_bytes + est.host_bytes < sum(est.terms.values())


def test_offload_and_streaming_move_terms_to_the_host():
    config = dict(hidden_size=3584, num_hidden_layers=28, intermediate_size=18944, num_attention_heads=28,
                  num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False)  # fmt: skip
    on_gpu = estimate_prune_memory(config, 128, 16384)
    streamed = estimate_prune_memory(config, 128, 16384, model_on_device=False, offload_activations=True)
    activations = 128 * 16384 * (3584 + 2 * 128) * 2
    assert on_gpu.terms["A: cached layer inputs"] == activations
    assert on_gpu.device_bytes - streamed.device_bytes == pytest.approx(
        activations + on_gpu.terms["W: model weights"] - streamed.terms["W: model weights"]
    )
    assert streamed.host_bytes > on_gpu.host_bytes + activations
    # the R1-Distill-Qwen-7B shape with 128 x 16k rows fits one 80 GB GPU, and streaming it fits a 24 GB one
    assert 30 < on_gpu.device_gib < 80 and streamed.device_gib < 24
    assert "device total" in on_gpu.table()
    cpu = estimate_prune_memory(config, 4, 512, same_memory=True)
    disk = cpu.terms["R: restore_on_error copies (disk)"]
    assert cpu.device_bytes == cpu.host_bytes == sum(cpu.terms.values()) - disk  # every memory term in one RSS
    assert estimate_prune_memory(config, 4, 512, method="wanda").terms["K: solve workspace (fp32)"] < 1 * GIB


def test_wanda_statistics_are_norms_and_a_token_sample():
    config = dict(hidden_size=896, num_hidden_layers=24, intermediate_size=4864, num_attention_heads=14,
                  num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True)  # fmt: skip
    gram = 4 * (2 * 896**2 + 896**2 + 4864**2)
    widths = 2 * 896 + 896 + 4864
    assert estimate_prune_memory(config, 8, 4096, method="sparsegpt").terms["S: statistics"] == gram
    assert (
        estimate_prune_memory(config, 8, 4096, method="wanda").terms["S: statistics"] == 4 * widths + 1024 * widths * 2
    )
    assert estimate_prune_memory(config, 8, 4096, method="wanda", error_sample_tokens=0).terms["S: statistics"] == gram
    assert estimate_prune_memory(config, 2, 100, method="magnitude").terms["S: statistics"] == 200 * widths * 2


@pytest.mark.parametrize("family", ["qwen3_moe", "qwen2_moe", "mixtral"])
def test_moe_weight_and_statistics_terms(family):
    from testing_utils import make_tiny_moe

    model = make_tiny_moe(family, num_layers=2)
    est = estimate_prune_memory(model.config, num_rows=4, tokens_per_row=32, dtype_bytes=4)
    params = sum(p.numel() for p in model.parameters())
    assert est.terms["W: model weights"] == pytest.approx(4 * params, rel=0.01)
    d, e, n = 64, (32 if family != "mixtral" else 32), 8
    experts = n * 4 * (d * d + e * e)
    assert est.terms["S: statistics"] > experts
    grouped = estimate_prune_memory(
        model.config, 4, 32, dtype_bytes=4, moe_stats_memory_gb=2 * 4 * (d * d + e * e) / GIB
    )
    assert est.terms["S: statistics"] - grouped.terms["S: statistics"] == pytest.approx(6 * 4 * (d * d + e * e))
    shared = estimate_prune_memory(model.config, 4, 32, dtype_bytes=4, moe_statistics="all_tokens")
    assert est.terms["S: statistics"] - shared.terms["S: statistics"] == pytest.approx(7 * 4 * d * d)


def test_qwen3_30b_a3b_shape():
    config = dict(model_type="qwen3_moe", hidden_size=2048, intermediate_size=6144, moe_intermediate_size=768,
                  num_experts=128, num_experts_per_tok=8, num_hidden_layers=48, num_attention_heads=32,
                  num_key_value_heads=4, head_dim=128, vocab_size=151936, tie_word_embeddings=False)  # fmt: skip
    est = estimate_prune_memory(config, 32, 2048, method="sparsegpt")
    assert 30.0e9 < est.terms["W: model weights"] / 2 < 31.0e9  # 30.5B parameters
    assert est.terms["S: statistics"] == pytest.approx(
        4 * (2048**2 + 4096**2) + 128 * 4 * (2048**2 + 768**2), rel=0.01
    )
