"""A trainer process for the monitor's crash and concurrency tests:
python monitor_trainer.py PATH N_STEPS SLEEP_S [WIDTH] trains an MLP with
the stand-in SGD, recording every step; N_STEPS 0 means until killed.
Prints 'ready' once the run file exists."""
import sys
import time

from cgrad import monitor
from monitor_standin import StandInSGD, batch, loss_of, mlp


def main(path, n_steps, sleep_s, width=32):
    model = mlp((4,) + (width,) * 8 + (3,))
    opt = StandInSGD(model.parameters(), lr=0.01)
    x, y = batch()
    with monitor.Run(path, config={"width": width}) as run:
        run.watch(model, opt)
        print("ready", flush=True)
        i = 0
        while n_steps == 0 or i < n_steps:
            opt.zero_grad()
            loss = loss_of(model, x, y)
            loss.backward()
            if i % 7 == 3:
                opt.clip_grad_norm_(0.01)
            opt.step()
            run.log_loss(loss)
            if i % 5 == 0:
                run.log(i, tick=float(i))
                run.event("tick", f"step {i}")
            i += 1
            if sleep_s:
                time.sleep(sleep_s)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]),
         int(sys.argv[4]) if len(sys.argv) > 4 else 32)
