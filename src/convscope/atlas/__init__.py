"""The atlas (`convscope atlas`): a static, self-contained "microscope" site of a model, with
a page per channel (feature visualization, diverse images, top dataset patches with guided
backprop, mean activation per class) and a map of the dataset in feature space.

An application of the library, as the demo gallery is: it imports the library and
`convscope.render`; the library never imports it.
"""

from convscope.atlas.build import DEFAULT_CHANNELS as DEFAULT_CHANNELS
from convscope.atlas.build import AtlasResult as AtlasResult
from convscope.atlas.build import build_atlas as build_atlas
from convscope.atlas.build import check_atlas_folder as check_atlas_folder
from convscope.atlas.build import default_map_layer as default_map_layer

__all__ = [
    "DEFAULT_CHANNELS",
    "AtlasResult",
    "build_atlas",
    "check_atlas_folder",
    "default_map_layer",
]
