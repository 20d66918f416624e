"""Fit y = 3x + 2 with gradient descent: the README's first example."""
import cgrad

cgrad.manual_seed(0)
x = cgrad.randn(100, 1)
y = 3 * x + 2 + 0.1 * cgrad.randn(100, 1)

w = cgrad.zeros(1, 1, requires_grad=True)
b = cgrad.zeros(1, requires_grad=True)
for step in range(100):
    loss = ((x @ w + b - y) ** 2).mean()
    loss.backward()
    with cgrad.no_grad():
        w -= 0.1 * w.grad
        b -= 0.1 * b.grad
    w.grad, b.grad = None, None
    if step % 20 == 0:
        print(f"step {step:3d}  loss {loss.item():.4f}")
print(f"w = {w.item():.3f}, b = {b.item():.3f}  (true: 3, 2)")
