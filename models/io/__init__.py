"""Reading and writing media and results: mask PNGs (`masks`), and later video, audio and overlays.

Submodules are imported where they are used (`from models.io.masks import read_index_mask`), so importing
this package stays cheap.
"""
