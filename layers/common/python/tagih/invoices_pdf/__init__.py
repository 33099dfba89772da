"""Invoice documents: the PDF (fpdf2, cached on S3 by content) and the hosted HTML page (jinja2).

Importing this package loads neither library: ``render`` imports them inside the functions that draw.
"""
