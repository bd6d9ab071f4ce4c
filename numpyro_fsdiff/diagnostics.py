"""ArviZ diagnostics for MCMC over fields: named image dimensions, summaries, image panels."""

from ._diagnostics import IMAGE_DIMS as IMAGE_DIMS
from ._diagnostics import default_summaries as default_summaries
from ._diagnostics import format_summary as format_summary
from ._diagnostics import plot_field_posterior as plot_field_posterior
from ._diagnostics import summarize as summarize
from ._diagnostics import to_datatree as to_datatree
