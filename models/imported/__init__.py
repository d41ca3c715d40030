"""Models from files other people's tools wrote: ONNX graphs and Keras 3 ``.keras`` archives.

Both become ordinary PyTorch modules, so every view (hooks, step-through, Grad-CAM…) works on them:

* :mod:`models.imported.onnx_graph` reads an ONNX file with every check a hostile file needs (size, node
  count, declared tensor sizes, external data inside the model's folder), normalises what exporters write
  into what ``onnx2torch`` converts, and names what it cannot;
* :mod:`models.imported.keras_archive` exports a ``.keras`` file to ONNX with Keras 3 itself (torch backend);
* :mod:`models.imported.convert` turns the normalised graph into a module (``onnx2torch``), caches the
  normalised graph on disk by the source file's sha256, and makes the registry entry.
"""
