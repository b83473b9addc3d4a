"""interop: PyTorch <-> Flax weight converters (state_dict importers and exporters)."""
