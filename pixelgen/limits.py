"""Numbers every layer agrees on, in a module that loads nothing: a recipe is checked
against them without torch, and the code that uses them imports them from here."""

#: The smallest sampling temperature accepted; below it logits / temperature overflow even in float64.
MIN_TEMPERATURE = 1e-6

#: The largest recipe file read, in bytes; the shipped recipes are a few KiB. A bigger file
#: is refused before it is read, so that a wrong path to a huge file exhausts no memory.
MAX_RECIPE_BYTES = 1 << 20

#: How deeply a recipe's tables and arrays may nest; a recipe needs 4 (runs.N.train.optimizer).
#: Deeper data is refused before anything walks it, so no walk can overflow the stack.
MAX_RECIPE_DEPTH = 32

#: The seeds accepted, 0..2**32-1, the range every generator a seed reaches accepts. Lightning's
#: ``seed_everything`` (``train.seed``) raises ValueError outside it because numpy's legacy
#: ``np.random.seed`` takes only uint32; ``torch.manual_seed`` would take more (up to
#: 2**64-1) but a seed means the same thing in every section and on the command line.
MIN_SEED, MAX_SEED = 0, 2**32 - 1

#: The most images one command generates or scores (``sample.n``, ``score.n``, ``-n``): a grid
#: and an archive batch of more images is a typo, not a wish. Batch sizes share the bound.
MAX_SAMPLES = 100_000
MAX_BATCH_SIZE = MAX_SAMPLES

#: The longest loops. A million epochs, a billion optimizer steps (or images, for
#: ``data.limit_*``) is beyond any run these models make; a bigger number is a typo.
MAX_EPOCHS = 1_000_000
MAX_STEPS = 1_000_000_000
MAX_IMAGES = 1_000_000_000

#: The most processes or threads (``data.num_workers``, ``train.threads``, ``train.devices``,
#: ``train.num_nodes``); more than this many of each is a typo on any machine that exists.
MAX_WORKERS = 1024

#: The largest image side generated or resized to (``pixelgen sample --size``,
#: ``data.image_size``, an image to complete): sampling is one network pass per sub-pixel, so a
#: side of 1024 already means three million passes.
MAX_IMAGE_SIDE = 1024

#: The largest value of a model's positive integer hyperparameter (widths, depths, kernel
#: sizes): the papers use at most 1024 features and a few dozen layers, and
#: :data:`MAX_MODEL_PARAMETERS` bounds what the hyperparameters build together.
MAX_HYPERPARAMETER = 16_384

#: The most parameters a model may have (4 GiB of float32 weights, before gradients and Adam's
#: state triple it); counted on the meta device before any weight is allocated.
MAX_MODEL_PARAMETERS = 1_000_000_000

#: The largest small file read whole, such as an image to complete or a run's metrics.json. A
#: few MiB is plenty, so a wrong path to a huge file (or a device that never ends) exhausts no
#: memory.
MAX_SMALL_FILE_BYTES = 64 << 20

#: The largest compressed file (``.pgz``) ``pixelgen decompress`` reads: 1 GiB.
MAX_COMPRESSED_BYTES = 1 << 30

#: The largest ``.npy`` of images ``pixelgen compress`` reads (1.3 million 28x28 grey images).
MAX_IMAGES_NPY_BYTES = 1 << 30

#: The largest canvas side ``pixelgen compare`` and ``pixelgen analyse`` measure on
#: (``--field-size``, ``--scaling-sizes``): the receptive field is a Jacobian over the canvas
#: and each scaling point times passes over whole images, so a side past the largest image
#: the papers model (64) by this much is a typo.
MAX_MEASURE_SIDE = 256

#: The most points one scaling sweep times (``--scaling-sizes``, ``--scaling-depths``).
MAX_SCALING_POINTS = 16

#: The most components a logistic mixture may have. Past a few dozen a mixture over 256
#: values gains nothing (the categorical is the exact limit), and each component costs
#: ten output channels per pixel (three for grey).
MAX_MIXTURES = 256
