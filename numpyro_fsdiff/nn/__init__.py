"""Score networks on one field: the Fourier neural operator and a U-Net baseline."""

from ._embedding import TimeEmbedding as TimeEmbedding
from ._embedding import sinusoidal_features as sinusoidal_features
from ._fno import FNO as FNO
from ._fno import LocalConv as LocalConv
from ._spectral import SpectralConv2d as SpectralConv2d
from ._spectral import dft_matrices as dft_matrices
from ._spectral import kept_modes as kept_modes
from ._unet import ResidualBlock as ResidualBlock
from ._unet import UNet as UNet
