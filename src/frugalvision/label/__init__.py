"""Label less: a labelling loop that asks for the images that teach the model most.

``frugalvision label UNLABELLED --classes a,b,c --out labelled/`` serves a page (127.0.0.1) that shows batches
of images chosen by :mod:`.strategy` (TypiClust while labels are few, then margin + diversity) with the current
model's guess; one key confirms it. Every decision is saved at once to ``labelled/manifest.csv``
(``path,label,labelled_by,labelled_at,...``; ``frugalvision train labelled/manifest.csv`` reads it); the
images are never moved or written.

From Python (the same loop without a browser)::

    from frugalvision.label import LabelSession
    s = LabelSession("unlabelled/", ["cat", "dog"], manifest="labelled/manifest.csv").prepare()
    batch = s.next_batch(10)            # [{"path", "guess", "p", "why"}, ...]
    s.record(batch[0]["path"], "cat")   # a class, "none" (not any class) or "skip"
    s.undo()
    s.estimate()                        # CV accuracy + Wilson interval, counts, stop advice
"""

from .manifest import COLUMNS, NONE, SKIP, read_labels
from .session import LabelSession, loop_model

__all__ = ["COLUMNS", "NONE", "SKIP", "LabelSession", "create_app", "loop_model", "read_labels"]


def __getattr__(name):
    if name == "create_app":  # FastAPI only when the page is wanted
        from .app import create_app

        return create_app
    raise AttributeError(name)
