"""Study reports: one document model rendered to Markdown and to a self-contained HTML page.

A study builds a :class:`Report` section by section (text, bullet lists, tables, figures) and
calls :meth:`Report.write`, which produces ``report.md`` (figures as PNG files beside it) and
``report.html`` (the same content with every figure embedded as a base64 data URI, so the single
file opens in any browser, offline). ``save_results`` writes the matching ``results.json`` and
``results.csv``. :func:`markdown_table` and :func:`write_csv` are cnnlab's one Markdown table
renderer and one CSV writer.
"""

from cnnlab.report._document import Report, fmt_num, save_results
from cnnlab.report._table import csv_text, markdown_table, write_csv

__all__ = ["Report", "csv_text", "fmt_num", "markdown_table", "save_results", "write_csv"]
