"""Two logical CPU devices, MirroredStrategy: check_jit_compile must refuse jit."""
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from keras_facemargin.training.strategy import check_jit_compile  # noqa: E402

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
check_jit_compile(strategy, False)
try:
    check_jit_compile(strategy, True)
except ValueError as e:
    assert "jit_compile=True" in str(e) and "Received" in str(e), e
    print("REFUSED")
