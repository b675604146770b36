import json
import pathlib

import datasets
import pytest

from hf_ssgr import list_sources, load_source, register_source
from hf_ssgr.calibration.sources import PROBLEM_COLUMNS, find_source, load_problems, load_texts, unregister_source

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
GSM8K = str(FIXTURES / "gsm8k_train_sample.jsonl")
MATH = str(FIXTURES / "math_train_sample.jsonl")


def test_builtin_registry():
    assert {"GSM8K", "MATH", "MathR", "OpenR1-Math", "C4", "Wikipedia", "DCLM"} <= set(list_sources())
    assert set(list_sources("text")) == {"C4", "Wikipedia", "DCLM", "tiny-text"}
    assert "tiny-arith" in list_sources("problems")


def test_unknown_source_lists_known_ones():
    with pytest.raises(ValueError, match="Unknown source 'MathQ'.*GSM8K.*MathR"):
        load_source("MathQ")


def test_gsm8k_local_copy_answer_after_hashes():
    ds = load_source("GSM8K", path=GSM8K)
    assert ds.column_names == PROBLEM_COLUMNS and len(ds) == 12
    assert ds[0]["answer"] == "72"
    assert "####" not in ds[0]["solution"] and "<<" not in ds[0]["solution"]
    assert len(set(ds["problem_id"])) == 12


def test_math_local_copy_answer_is_last_boxed():
    ds = load_source("MATH", path=MATH)
    raw = [json.loads(line) for line in open(FIXTURES / "math500_sample.jsonl")]
    assert ds["answer"] == [r["answer"] for r in raw]
    assert ds[0]["level"].startswith("Level")


def test_mathr_is_gsm8k_plus_math():
    ds = load_source("MathR", path={"GSM8K": GSM8K, "MATH": MATH})
    assert len(ds) == 12 + 15
    assert set(ds["source"]) == {"GSM8K", "MATH"}
    with pytest.raises(ValueError, match="mapping"):
        load_source("MathR", path=GSM8K)


def test_user_dataset_and_files(tmp_path):
    user = datasets.Dataset.from_dict({"question": ["1+1?", "2+2?"], "final_answer": ["2", "4"]})
    ds = load_source(user)
    assert ds["answer"] == ["2", "4"] and ds["problem"] == ["1+1?", "2+2?"]
    user.to_parquet(tmp_path / "p.parquet")
    assert load_source(str(tmp_path / "p.parquet"))["answer"] == ["2", "4"]
    user.save_to_disk(str(tmp_path / "saved"))
    assert load_source(str(tmp_path / "saved"))["answer"] == ["2", "4"]
    # a GSM8K-format file without the registry name
    assert load_source(GSM8K)[0]["answer"] == "72"


def test_missing_answer_column_is_a_clear_error():
    with pytest.raises(ValueError, match="no answer column.*register_source"):
        load_source(datasets.Dataset.from_dict({"problem": ["x"], "notes": ["y"]}))


def test_register_source_and_text_corpus(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"content": f"document {i} " * 50}) + "\n" for i in range(5)))
    try:
        register_source("MyCorpus", kind="text", text_column="content", license="CC0")
        ds = load_texts("MyCorpus", path=str(path))
        assert ds.column_names == ["text", "source"] and len(ds) == 5
        with pytest.raises(ValueError, match="already registered"):
            register_source("mycorpus", kind="text")
        with pytest.raises(ValueError, match="text corpus"):
            load_problems("MyCorpus")
    finally:
        if find_source("MyCorpus") is not None:
            unregister_source("MyCorpus")


def test_hub_failure_says_how_to_use_a_local_copy(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(RuntimeError, match=r"load_source\('GSM8K', path="):
        load_source("GSM8K")
