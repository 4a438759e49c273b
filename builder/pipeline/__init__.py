"""The stages of a build in order, each a function of its inputs, and the build that caches them."""
