"""The run directory: its layout (``partgm.run.layout``) and the one fresh-or-resume rule."""
