"""Shared core of the TGS salt pipeline: errors, atomic IO, competition format (RLE, metric), input geometry."""
