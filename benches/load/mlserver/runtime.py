"""A minimal MLServer runtime that runs an ONNX model on ONNX Runtime, for the load benchmark.

Mirrors what inferd does for the `mlp` fixture: decode the V2 request's tensors to numpy, run
the session, encode every output. The model file is `model-settings.json`'s parameters.uri.
"""

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxRuntimeModel(MLModel):
    async def load(self) -> bool:
        path = await get_model_uri(self._settings)
        opts = ort.SessionOptions()
        # Same thread settings as inferd's default for this machine (intra_op = cores, 2 here).
        self._session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        self._outputs = [o.name for o in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {
            inp.name: np.ascontiguousarray(NumpyCodec.decode_input(inp))
            for inp in payload.inputs
        }
        results = self._session.run(self._outputs, feeds)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[NumpyCodec.encode_output(name, r) for name, r in zip(self._outputs, results)],
        )
