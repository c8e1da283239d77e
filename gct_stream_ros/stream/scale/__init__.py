"""Metric scale: the factor that turns the network's model units into metres, from a source that knows it.

One concept per module: ``options`` (the typed settings), ``state`` (what users are told),
``ratio_window`` (the robust sliding-window ratio every measuring source shares), ``source``
(what a measuring source is) and one module per source (``odometry``, ``depth``,
``camera_height``), ``reference`` (what a sensor measured at an image's stamp), ``stamped``
(matching sensor data to image stamps), ``tracker`` (the per-sequence estimate with its
smoothing) and ``apply`` (scaling a ``FrameResult``). Nothing here imports ROS: the node and
the offline tool feed the sources.
"""
