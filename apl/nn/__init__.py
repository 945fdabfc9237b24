"""Retrieval network parts: GeM pooling, whitening, L2 normalisation, backbones, RetrievalNet."""
from .backbones import BACKBONES, RESNETS, ResNetBackbone, SmallCNN, build_backbone
from .model import RetrievalNet
from .pooling import GeM, L2Norm
from .whitening import Whitening

__all__ = ["BACKBONES", "GeM", "L2Norm", "RESNETS", "ResNetBackbone", "RetrievalNet", "SmallCNN", "Whitening", "build_backbone"]
