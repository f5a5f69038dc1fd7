"""The config layer: composing the packaged configs (Hydra), explaining Hydra's errors, and the
factory that turns a validated config into built components. The schemas are tftrain.schema."""
