"""Hydra plugin: prresq's typed config groups for every Hydra composition of `conf/`.

`conf/grpo/default.yaml` and `conf/scoring/*.yaml` extend the typed `grpo/base` and `scoring/*_base`
configs that `prresq.config.register_configs` stores in Hydra's ConfigStore. Hydra imports the
modules of the `hydra_plugins` namespace package before it composes a config, so this plugin makes
a plain `hydra.compose` (a notebook or script that never imports prresq) find them.
"""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

from prresq.config import register_configs


class PrresqConfigs(SearchPathPlugin):
    """Registers the typed groups (idempotent); the search path itself is left as it is."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        register_configs()


register_configs()
