"""Retrieval network parts: backbones, GeM pooling, L2 normalisation, the descriptor head
(BatchNorm, whitening), RetrievalNet."""
from .backbones import BACKBONES, RESNETS, ResNetBackbone, SmallCNN, build_backbone
from .head import HEADS, DescriptorHead
from .model import PooledFeatures, RetrievalNet
from .pooling import GeM, L2Norm
from .whitening import Whitening

__all__ = ["BACKBONES", "DescriptorHead", "GeM", "HEADS", "L2Norm", "PooledFeatures", "RESNETS", "ResNetBackbone",
           "RetrievalNet", "SmallCNN", "Whitening", "build_backbone"]
