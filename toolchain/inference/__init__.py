"""The model-file contract and ONNX Runtime: what an exported model says about itself, how its files are named,
and the one way a session is opened and run. Shared by `toolchain.export` and `toolchain.scoring`; no torch.
"""
