"""Widget UI: the hyperparameter form and the checkpoint browser (ipywidgets loads on use)."""

from nbtrain.ui.browser import browse
from nbtrain.ui.form import form
from nbtrain.ui.magics import register_ui_magics

__all__ = ["browse", "form", "register_ui_magics"]
