"""Lossless recording: the MCAP recorder and its format, the runtime's sink, and the
readers built on the format (``info``, ``export``).
"""
