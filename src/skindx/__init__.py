"""SkinDX: dermatoscopic skin-lesion classification (HAM10000, 7 classes).

Importing the package pulls in nothing heavy: `skindx.inference` must stay torch-free so
that the serving image can use it.
"""

__version__ = "0.1.0"
