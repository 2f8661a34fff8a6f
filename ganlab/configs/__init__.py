"""ganlab's Hydra configs, shipped with the package: Hydra reads them as `pkg://ganlab.configs`
(ganlab.config.CONFIG_SOURCE). train.yaml composes one option of each group (a folder here)."""
