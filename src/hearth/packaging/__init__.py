"""Function bundles and their dependency layers."""
