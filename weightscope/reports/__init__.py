"""HTML reports and figures, one module per analysis, on the shared page helpers in ``page``.

Every report is one self-contained file: inline CSS, figures as PNG data URIs, no network.
"""
