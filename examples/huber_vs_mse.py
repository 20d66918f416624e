"""Robust regression: Huber loss vs mean squared error on data with outliers.

    python examples/huber_vs_mse.py

scikit-learn's bundled diabetes set (442 patients, 10 features, disease
progression after a year; no download). In the training split 15% of the
targets are corrupted (shifted up by 5 to 10 standard deviations, as a
broken sensor or a unit mix-up would); the test split stays clean. A linear
model is trained on the standardised data with MSELoss and with
HuberLoss(delta=1.0): squared error lets the outliers drag the fit, Huber
grows only linearly past delta so each one pulls with bounded force.
Reported: mean absolute error on the clean test set, in the target's units.
"""
import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split

import cgrad
from cgrad import nn

SEED = 0
OUTLIER_FRACTION = 0.15


def load_data():
    x, y = load_diabetes(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.3, random_state=SEED)
    rng = np.random.default_rng(SEED)
    bad = rng.choice(len(y_tr), size=int(OUTLIER_FRACTION * len(y_tr)), replace=False)
    y_bad = y_tr.copy()
    y_bad[bad] += rng.uniform(5, 10, size=len(bad)) * y_tr.std()
    mean, std = x_tr.mean(0), x_tr.std(0)
    # robust centre and scale (median, 1.4826 MAD): the outliers barely move them
    y_mid = np.median(y_bad)
    y_scale = 1.4826 * np.median(np.abs(y_bad - y_mid))
    prep = lambda a: ((a - mean) / std).astype(np.float32)
    target = lambda t: ((t - y_mid) / y_scale).astype(np.float32)
    return prep(x_tr), prep(x_te), target(y_bad), target(y_tr), y_te, (y_mid, y_scale)


def train(loss_fn, x, y, epochs=300):
    cgrad.manual_seed(SEED)
    model = nn.Linear(x.shape[1], 1)
    opt = cgrad.optim.Adam(model.parameters(), lr=0.05)
    xt, yt = cgrad.from_numpy(x), cgrad.from_numpy(y[:, None])
    for _ in range(epochs):  # full batch
        opt.zero_grad()
        loss_fn(model(xt), yt).backward()
        opt.step()
    return model


def test_mae(model, x, y, scale):
    with cgrad.no_grad():
        predicted = model(cgrad.from_numpy(x)).numpy()[:, 0] * scale[1] + scale[0]
    return float(np.abs(predicted - y).mean())


def main():
    x_tr, x_te, y_bad, y_clean, y_te, scale = load_data()
    print(f"train: {len(y_bad)} patients, {int(OUTLIER_FRACTION * len(y_bad))} corrupted targets; "
          f"test: {len(y_te)} clean (target std {y_te.std():.1f})")
    runs = (("MSE", nn.MSELoss(), y_bad), ("Huber", nn.HuberLoss(delta=1.0), y_bad),
            ("MSE, clean data", nn.MSELoss(), y_clean))  # the reference without outliers
    for name, loss_fn, y in runs:
        print(f"{name:16s} test MAE {test_mae(train(loss_fn, x_tr, y), x_te, y_te, scale):.2f}")


if __name__ == "__main__":
    main()
