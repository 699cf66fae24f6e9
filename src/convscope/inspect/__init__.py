"""Inspecting: filters, activation maps, feature space, maximally activating patches."""

# Re-exports use `import x as x` so that each module's lines can be appended independently.
from convscope.inspect.activations import activation_grid as activation_grid
from convscope.inspect.activations import activation_maps as activation_maps
from convscope.inspect.activations import activation_overlay as activation_overlay
from convscope.inspect.activations import channel_spec as channel_spec
from convscope.inspect.activations import parse_channels as parse_channels
from convscope.inspect.activations import scaling_caption as scaling_caption
from convscope.inspect.activations import strongest_channels as strongest_channels
from convscope.inspect.class_means import ClassMeans as ClassMeans
from convscope.inspect.class_means import class_means as class_means
from convscope.inspect.embed import embed_2d as embed_2d
from convscope.inspect.embed import grid_snap as grid_snap
from convscope.inspect.embed import knn_accuracy_2d as knn_accuracy_2d
from convscope.inspect.features import FeatureFile as FeatureFile
from convscope.inspect.features import extract_features as extract_features
from convscope.inspect.features import load_features as load_features
from convscope.inspect.filters import compare_first_layers as compare_first_layers
from convscope.inspect.filters import conv_layer as conv_layer
from convscope.inspect.filters import filter_grid as filter_grid
from convscope.inspect.filters import filter_tiles as filter_tiles
from convscope.inspect.filters import first_conv as first_conv
from convscope.inspect.neighbors import nearest as nearest
from convscope.inspect.neighbors import pixel_vectors as pixel_vectors
from convscope.inspect.patches import top_patches_figure as top_patches_figure
from convscope.inspect.scan import TopK as TopK
from convscope.inspect.scan import merge_topk as merge_topk
from convscope.inspect.scan import scan_top_activations as scan_top_activations
