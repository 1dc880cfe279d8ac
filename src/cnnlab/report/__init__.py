"""Study reports: one document model rendered to Markdown and to a self-contained HTML page.

A study builds a :class:`Report` section by section (text, bullet lists, tables, figures) and
calls :meth:`Report.write`, which produces ``report.md`` (figures as PNG files beside it) and
``report.html`` (the same content with every figure embedded as a base64 data URI, so the single
file opens in any browser, offline). ``save_results`` writes the matching ``results.json`` and
``results.csv``.
"""

from cnnlab.report._document import Report, fmt_num, save_results

__all__ = ["Report", "fmt_num", "save_results"]
