"""Focal loss vs cross-entropy on an imbalanced binary problem.

    python examples/focal_vs_ce.py

scikit-learn's bundled breast-cancer set (569 tumours, 30 features; no
download). The positive class is "malignant"; in the training split only
one malignant tumour in ten is kept, so positives are ~6% of training data,
while the test split keeps its natural mix. The same small MLP is trained
with plain binary cross-entropy (BCEWithLogitsLoss) and with binary focal
loss (FocalLoss(mode="binary", gamma=2, alpha=0.75): alpha weights the rare
positives, gamma focuses on the examples still misclassified). Reported:
recall on the minority class (malignant tumours found) and precision, at
the usual 0.5 threshold. Full-batch SGD with momentum, 200 epochs, the
same initial weights for both losses; runs in about a second.
"""
import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

import cgrad
from cgrad import nn

SEED = 0
KEEP_POSITIVE = 0.1  # fraction of the training malignant cases kept


def load_data():
    data = load_breast_cancer()
    x, y = data.data.astype(np.float32), (data.target == 0).astype(np.float32)  # 1 = malignant
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.4, random_state=SEED, stratify=y)
    rng = np.random.default_rng(SEED)
    pos = np.flatnonzero(y_tr == 1)
    drop = rng.choice(pos, size=len(pos) - int(round(KEEP_POSITIVE * len(pos))), replace=False)
    keep = np.setdiff1d(np.arange(len(y_tr)), drop)
    x_tr, y_tr = x_tr[keep], y_tr[keep]
    mean, std = x_tr.mean(0), x_tr.std(0)
    return (x_tr - mean) / std, (x_te - mean) / std, y_tr, y_te


def train(loss_fn, x, y, epochs):
    cgrad.manual_seed(SEED)  # the same initial weights for both losses
    model = nn.Sequential(nn.Linear(x.shape[1], 16), nn.ReLU(), nn.Linear(16, 1))
    opt = cgrad.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    xt, yt = cgrad.from_numpy(x), cgrad.from_numpy(y[:, None])
    for _ in range(epochs):  # full batch: the data set is small
        opt.zero_grad()
        loss_fn(model(xt), yt).backward()
        opt.step()
    return model


def evaluate(model, x, y):
    with cgrad.no_grad():
        predicted = (model(cgrad.from_numpy(x)).numpy()[:, 0] > 0).astype(np.float32)
    tp = float(((predicted == 1) & (y == 1)).sum())
    recall = tp / float((y == 1).sum())
    precision = tp / max(float(predicted.sum()), 1.0)
    return recall, precision


def main(epochs=200):
    x_tr, x_te, y_tr, y_te = load_data()
    print(f"train: {len(y_tr)} tumours, {int(y_tr.sum())} malignant ({y_tr.mean():.1%}); "
          f"test: {len(y_te)} tumours, {int(y_te.sum())} malignant")
    losses = {"cross-entropy": nn.BCEWithLogitsLoss(),
              "focal": nn.FocalLoss(mode="binary", gamma=2.0, alpha=0.75)}
    for name, loss_fn in losses.items():
        recall, precision = evaluate(train(loss_fn, x_tr, y_tr, epochs), x_te, y_te)
        print(f"{name:14s} minority recall {recall:.4f}  precision {precision:.4f}")


if __name__ == "__main__":
    main()
