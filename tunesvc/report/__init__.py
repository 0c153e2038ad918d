"""Reports: pictures of searches and their results."""
