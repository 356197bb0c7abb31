"""Small versions of the models users train, built from configs (no download), with matching data.

* :func:`tiny_bert` — ``BertForSequenceClassification`` (hidden 16, 1 layer), dict batches with padding;
* :func:`tiny_gpt2` — ``GPT2LMHeadModel`` (hidden 16, 1 layer), right-padded batches of unequal lengths
  whose padding and prompt tokens are labelled -100;
* :func:`tiny_vit` — Hugging Face ``ViTForImageClassification`` on 8×8 images (torchvision, and so timm, has
  no CPU build on the package index this project installs from);
* :func:`resnet18` — the ResNet-18 of He et al. (2016) written out here (torchvision's wheel on the package
  index is built against CUDA torch and does not load beside the CPU build).
"""

from __future__ import annotations

import torch
from torch import nn

VOCAB = 40


def _quiet() -> None:
    import transformers

    transformers.logging.set_verbosity_error()


def tiny_bert(num_labels: int = 3, seed: int = 0) -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    _quiet()
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32, num_labels=num_labels,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(config).eval()


def tiny_gpt2(seed: int = 0, attn: str = "sdpa") -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    _quiet()
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=16, n_layer=1, n_head=2, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0, attn_implementation=attn)
    return GPT2LMHeadModel(config).eval()


def tiny_vit(num_labels: int = 3, seed: int = 0) -> nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    _quiet()
    torch.manual_seed(seed)
    config = ViTConfig(image_size=8, patch_size=4, num_channels=3, hidden_size=16, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=32, num_labels=num_labels,
                       hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return ViTForImageClassification(config).eval()


def token_batches(lengths: list[list[int]], *, seed: int = 0, prompt: int = 1, classes: int | None = None) -> list[dict]:
    """Dict batches of right-padded sequences: ``lengths[b]`` the real lengths of batch b's rows.

    Padding has attention_mask 0; for language modelling (``classes=None``) the labels are the input ids
    with the padding and the first ``prompt`` tokens set to -100; else one class label per sequence.
    """
    generator = torch.Generator().manual_seed(seed)
    out = []
    for rows in lengths:
        width = max(rows)
        ids = torch.randint(1, VOCAB, (len(rows), width), generator=generator)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, n in enumerate(rows):
            mask[i, :n] = 1
        ids = ids * mask
        if classes is None:
            labels = ids.clone()
            labels[mask == 0] = -100
            labels[:, :prompt] = -100
        else:
            labels = torch.randint(0, classes, (len(rows),), generator=generator)
        out.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return out


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nn.Module):
    """ResNet-18: a 7×7 stem, four stages of two basic blocks (64–512 channels), global pooling, ``fc``."""

    def __init__(self, num_classes: int = 10, width: int = 64) -> None:
        super().__init__()
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages, cin = [], width
        for i, cout in enumerate(widths):
            stages.append(nn.Sequential(_Block(cin, cout, 1 if i == 0 else 2), _Block(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def resnet18(num_classes: int = 10, width: int = 64, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return ResNet18(num_classes, width).eval()


def images(n: int, size: int = 16, classes: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=generator), torch.randint(0, classes, (n,), generator=generator)
