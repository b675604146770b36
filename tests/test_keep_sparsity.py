import torch
from testing_utils import make_calibration, make_tiny_model
from transformers import Trainer, TrainingArguments

from hf_ssgr import KeepSparsityCallback, OneShotPruner, PruningConfig


class _Rows(torch.utils.data.Dataset):
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        ids = torch.tensor(self.rows[i])
        return {"input_ids": ids, "labels": ids.clone()}


def _finetune(model, tmp_path, callbacks):
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        max_steps=4,
        learning_rate=5e-2,
        weight_decay=0.1,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    Trainer(model=model, args=args, train_dataset=_Rows(make_calibration(8, 16, seed=3)), callbacks=callbacks).train()


def _pruned_model():
    model = make_tiny_model("llama")
    OneShotPruner(PruningConfig(method="wanda", sparsity=0.5), progress_bar=False).prune(model, make_calibration())
    return model


def test_keep_sparsity_during_trainer_finetuning(tmp_path):
    model = _pruned_model()
    masks = {n: (m.weight != 0).clone() for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    before = {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    callback = KeepSparsityCallback()
    _finetune(model, tmp_path, [callback])

    assert len(callback.masks) == 14  # the decoder linears; lm_head is dense and left alone
    for name, module in model.named_modules():
        if name in callback.masks or name + ".weight" in callback.masks:
            w = module.weight.detach()
            assert bool((w[~masks[name]] == 0).all()), f"{name}: a pruned weight came back"
            assert int((w == 0).sum()) == w.numel() // 2
            assert not torch.equal(w, before[name]), f"{name}: training did not update the kept weights"


def test_without_callback_pruned_weights_come_back(tmp_path):
    """The control experiment: the same fine-tuning without the callback revives pruned weights."""
    model = _pruned_model()
    _finetune(model, tmp_path, [])
    w = model.model.layers[0].mlp.down_proj.weight
    assert int((w == 0).sum()) < w.numel() // 2
