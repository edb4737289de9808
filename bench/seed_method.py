"""The seed's method, written the way a PyTorch transfer-learning tutorial writes it.

Frozen pretrained backbone, augmentation on the fly (so the backbone runs on every
image in every epoch), a linear layer trained with SGD for E epochs, then evaluation
on the test folder. Same backbone and weights as frugalvision's default
(EfficientNet-Lite0, ImageNet), same images. Follows the official "ConvNet as fixed
feature extractor" tutorial: model.train() while training, model.eval() to evaluate.
"""

from __future__ import annotations

import time

import torch
from torch import nn
from torchvision import datasets, transforms


def run(train_dir: str, test_dir: str, epochs: int = 10, batch_size: int = 32, lr: float = 0.01,
        workers: int = 2, log=print) -> dict:
    from frugalvision.backbones.build import imagenet_classifier

    torch.manual_seed(0)
    mean, std = [0.498] * 3, [0.502] * 3
    train_tf = transforms.Compose([
        transforms.Grayscale(3),
        transforms.RandomResizedCrop(224, scale=(0.7, 1.0)),
        transforms.RandomHorizontalFlip(),
        transforms.RandomRotation(10),
        transforms.ColorJitter(0.2, 0.2),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])
    test_tf = transforms.Compose([transforms.Grayscale(3), transforms.Resize(224), transforms.CenterCrop(224),
                                  transforms.ToTensor(), transforms.Normalize(mean, std)])
    train_ds = datasets.ImageFolder(train_dir, train_tf)
    test_ds = datasets.ImageFolder(test_dir, test_tf)
    train_dl = torch.utils.data.DataLoader(train_ds, batch_size=batch_size, shuffle=True, num_workers=workers)
    test_dl = torch.utils.data.DataLoader(test_ds, batch_size=batch_size, num_workers=workers)

    model, _ = imagenet_classifier("efficientnet_lite0")
    for p in model.parameters():
        p.requires_grad = False
    model.classifier = nn.Linear(model.classifier.in_features, len(train_ds.classes))
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.classifier.parameters(), lr=lr, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)

    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        running, correct, seen = 0.0, 0, 0
        for x, y in train_dl:
            optimizer.zero_grad()
            out = model(x)
            loss = criterion(out, y)
            loss.backward()
            optimizer.step()
            running += loss.item() * len(y)
            correct += (out.argmax(1) == y).sum().item()
            seen += len(y)
        scheduler.step()
        log(f"  seed method epoch {epoch + 1}/{epochs}: loss {running / seen:.3f}, train acc {correct / seen:.3f}, "
            f"{time.perf_counter() - t0:.0f} s")
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in test_dl:
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
    return {"seconds": time.perf_counter() - t0, "test_accuracy": correct / total, "epochs": epochs,
            "n_train": len(train_ds), "n_test": len(test_ds)}
