"""ganlab's Ray launcher for `ganlab train -m hydra/launcher=ray` (ganlab/configs/hydra/launcher/ray.yaml). Hydra
finds plugins only in the hydra_plugins package, so the class lives here; what it does is ganlab/ray_launcher.py's."""
