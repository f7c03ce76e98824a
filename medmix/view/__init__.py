"""`medmix view`: a local, read-only web app to look at a mixture (see medmix.view.webapp)."""
