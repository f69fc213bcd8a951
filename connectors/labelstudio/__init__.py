"""Label Studio: a local server the project runs itself (``server``) and the labeling-tool
connector (``tool``). Import the submodules; nothing is imported or started here."""
