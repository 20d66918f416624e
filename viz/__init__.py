"""cgrad.viz: the desktop training monitor (``cgrad-monitor``).

model (NumPy buffers, no Qt) <- source (QObject + reader thread) -> panels
(pyqtgraph) in app.MainWindow; alerts and downsample are Qt-free. Needs the
``viz`` extra: ``pip install cgrad[viz]`` (PyQt6, pyqtgraph).
"""
__all__ = ["main"]


def main(argv=None):
    """Entry point of the cgrad-monitor command (see cgrad.viz.app)."""
    from .app import main as app_main
    return app_main(argv)
