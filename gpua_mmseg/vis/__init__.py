"""Visualisation: class palette and overlay pictures with a colour legend (PIL, numpy only).

``gpua_mmseg.vis.alignment`` (matplotlib, torch) holds the before/after plot of alignment maps;
it is not imported here.
"""
from .overlay import LegendEntry, colorize, legend_font, render_overlay
from .palette import BACKGROUND_NAMES, class_palette

__all__ = ['LegendEntry', 'colorize', 'legend_font', 'render_overlay', 'BACKGROUND_NAMES',
           'class_palette']
