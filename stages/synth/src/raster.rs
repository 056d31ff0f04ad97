//! A small software rasteriser: z-buffered triangles into a G-buffer for deferred shading,
//! anti-aliased 2D shapes, box blur and hashed value noise. Buffers are allocated once per image,
//! never per pixel.

/// Attributes carried by each vertex and interpolated per pixel: three material coordinates
/// (for the head: frontal x, y and the cosine of the section angle) and the camera-frame normal.
pub(crate) const ATTRS: usize = 6;

/// A projected vertex: screen x, y (internal pixel convention), depth (larger = nearer).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Vertex {
    pub pos: [f32; 3],
    pub attr: [f32; ATTRS],
}

/// What a triangle is made of; decides how a pixel is shaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Material {
    Head,
    Hair,
    Ear,
    Neck,
    Torso,
}

/// Triangles with their materials.
#[derive(Debug, Default)]
pub(crate) struct Mesh {
    pub verts: Vec<Vertex>,
    pub tris: Vec<[u32; 3]>,
    pub materials: Vec<Material>,
}

impl Mesh {
    /// Add a grid of `nu × nv` vertices (row-major, u fastest) as two triangles per cell;
    /// `wrap_u` closes the grid in u (a surface of revolution).
    pub fn add_grid(
        &mut self,
        verts: Vec<Vertex>,
        nu: usize,
        nv: usize,
        wrap_u: bool,
        material: Material,
    ) {
        self.add_grid_where(verts, nu, nv, wrap_u, material, |_| true);
    }

    /// [`Mesh::add_grid`] keeping only the triangles with at least one vertex `keep` accepts.
    pub fn add_grid_where(
        &mut self,
        verts: Vec<Vertex>,
        nu: usize,
        nv: usize,
        wrap_u: bool,
        material: Material,
        keep: impl Fn(usize) -> bool,
    ) {
        let base = self.verts.len() as u32;
        self.verts.extend(verts);
        let cells_u = if wrap_u { nu } else { nu - 1 };
        for j in 0..nv - 1 {
            for i in 0..cells_u {
                let i1 = (i + 1) % nu;
                let a = base + (j * nu + i) as u32;
                let b = base + (j * nu + i1) as u32;
                let c = base + ((j + 1) * nu + i) as u32;
                let d = base + ((j + 1) * nu + i1) as u32;
                for tri in [[a, b, d], [a, d, c]] {
                    if tri.iter().any(|&v| keep((v - base) as usize)) {
                        self.tris.push(tri);
                        self.materials.push(material);
                    }
                }
            }
        }
    }
}

/// Outward vertex normals of a grid surface (row-major, u fastest) by central differences;
/// `fallback` where the grid degenerates (poles).
pub(crate) fn grid_normals(
    pos: &[[f32; 3]],
    nu: usize,
    nv: usize,
    wrap_u: bool,
    fallback: [f32; 3],
) -> Vec<[f32; 3]> {
    use super::model::{cross, normalize_or, sub};
    let mut out = Vec::with_capacity(pos.len());
    for j in 0..nv {
        for i in 0..nu {
            let (il, ir) = if wrap_u {
                ((i + nu - 1) % nu, (i + 1) % nu)
            } else {
                (i.saturating_sub(1), (i + 1).min(nu - 1))
            };
            let (jd, ju) = (j.saturating_sub(1), (j + 1).min(nv - 1));
            let du = sub(pos[j * nu + ir], pos[j * nu + il]);
            let dv = sub(pos[ju * nu + i], pos[jd * nu + i]);
            out.push(normalize_or(cross(du, dv), fallback));
        }
    }
    out
}

/// Marks a pixel no triangle covers.
pub(crate) const NO_TRI: u32 = u32::MAX;

/// Per pixel: the nearest triangle, its depth and the barycentric weights of its first two
/// vertices at the pixel centre.
pub(crate) struct GBuffer {
    pub width: usize,
    pub height: usize,
    pub depth: Vec<f32>,
    pub tri: Vec<u32>,
    pub bary: Vec<[f32; 2]>,
}

impl GBuffer {
    pub fn new(width: usize, height: usize) -> Self {
        let n = width * height;
        GBuffer {
            width,
            height,
            depth: vec![f32::NEG_INFINITY; n],
            tri: vec![NO_TRI; n],
            bary: vec![[0.0; 2]; n],
        }
    }

    /// Z-buffer every triangle of `mesh` (pixel centres at +0.5). Triangles of closed surfaces
    /// facing away from the camera (negative screen area with y down, given the grids' winding)
    /// are culled; ears are two-sided.
    pub fn rasterise(&mut self, mesh: &Mesh) {
        let (w, h) = (self.width as f32, self.height as f32);
        for (t, tri) in mesh.tris.iter().enumerate() {
            let [a, b, c] = tri.map(|i| mesh.verts[i as usize].pos);
            let area = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]);
            let two_sided = mesh.materials[t] == Material::Ear;
            if !(area > 1e-9 || (two_sided && area < -1e-9)) {
                continue;
            }
            let inv = 1.0 / area;
            let min_x = a[0].min(b[0]).min(c[0]);
            let max_x = a[0].max(b[0]).max(c[0]);
            let min_y = a[1].min(b[1]).min(c[1]);
            let max_y = a[1].max(b[1]).max(c[1]);
            let x0 = (min_x - 0.5).ceil().max(0.0);
            let x1 = (max_x - 0.5).floor().min(w - 1.0);
            let y0 = (min_y - 0.5).ceil().max(0.0);
            let y1 = (max_y - 0.5).floor().min(h - 1.0);
            if !(x0 <= x1 && y0 <= y1) {
                continue;
            }
            for py in y0 as usize..=y1 as usize {
                let yc = py as f32 + 0.5;
                let row = py * self.width;
                for px in x0 as usize..=x1 as usize {
                    let xc = px as f32 + 0.5;
                    let la = ((b[0] - xc) * (c[1] - yc) - (b[1] - yc) * (c[0] - xc)) * inv;
                    let lb = ((c[0] - xc) * (a[1] - yc) - (c[1] - yc) * (a[0] - xc)) * inv;
                    let lc = 1.0 - la - lb;
                    if la < 0.0 || lb < 0.0 || lc < 0.0 {
                        continue;
                    }
                    let z = la * a[2] + lb * b[2] + lc * c[2];
                    let i = row + px;
                    if z > self.depth[i] {
                        self.depth[i] = z;
                        self.tri[i] = t as u32;
                        self.bary[i] = [la, lb];
                    }
                }
            }
        }
    }

    /// Depth of the nearest surface at the pixel containing (x, y); `None` for background or
    /// outside the image.
    pub fn depth_at(&self, x: f32, y: f32) -> Option<f32> {
        if !(x >= 0.0 && y >= 0.0 && x < self.width as f32 && y < self.height as f32) {
            return None;
        }
        let i = y as usize * self.width + x as usize;
        (self.tri[i] != NO_TRI).then_some(self.depth[i])
    }

    /// Material and interpolated attributes at pixel index `i`, if covered.
    pub fn attributes(&self, mesh: &Mesh, i: usize) -> Option<(Material, [f32; ATTRS])> {
        let t = self.tri[i];
        if t == NO_TRI {
            return None;
        }
        let [la, lb] = self.bary[i];
        let lc = 1.0 - la - lb;
        let [a, b, c] = mesh.tris[t as usize].map(|v| &mesh.verts[v as usize].attr);
        let mut out = [0.0; ATTRS];
        for k in 0..ATTRS {
            out[k] = la * a[k] + lb * b[k] + lc * c[k];
        }
        Some((mesh.materials[t as usize], out))
    }
}

/// Linear RGB frame buffer in [0, 1] (values may overshoot until quantised).
pub(crate) struct Frame {
    pub width: usize,
    pub height: usize,
    pub px: Vec<[f32; 3]>,
}

impl Frame {
    pub fn new(width: usize, height: usize) -> Self {
        Frame {
            width,
            height,
            px: vec![[0.0; 3]; width * height],
        }
    }

    fn blend(&mut self, i: usize, c: [f32; 3], alpha: f32) {
        let p = &mut self.px[i];
        for k in 0..3 {
            p[k] += (c[k] - p[k]) * alpha;
        }
    }

    /// Paint a shape given by a signed distance (pixels, negative inside) over the square of
    /// half-size `reach` around `centre`, with one pixel of anti-aliasing. `paint` gets the
    /// shape's local coordinates (rotated by −`angle`).
    fn fill_sdf(
        &mut self,
        centre: [f32; 2],
        reach: f32,
        angle: f32,
        alpha: f32,
        sdf: impl Fn(f32, f32) -> f32,
        paint: impl Fn(f32, f32) -> [f32; 3],
    ) {
        let (s, c) = angle.sin_cos();
        let x0 = (centre[0] - reach - 1.0).floor().max(0.0) as usize;
        let y0 = (centre[1] - reach - 1.0).floor().max(0.0) as usize;
        let x1 = ((centre[0] + reach + 1.0).ceil().max(0.0) as usize).min(self.width);
        let y1 = ((centre[1] + reach + 1.0).ceil().max(0.0) as usize).min(self.height);
        for py in y0..y1 {
            let dy = py as f32 + 0.5 - centre[1];
            for px in x0..x1 {
                let dx = px as f32 + 0.5 - centre[0];
                let (lx, ly) = (dx * c + dy * s, -dx * s + dy * c);
                let cover = (0.5 - sdf(lx, ly)).clamp(0.0, 1.0);
                if cover > 0.0 {
                    let col = paint(lx, ly);
                    self.blend(py * self.width + px, col, cover * alpha);
                }
            }
        }
    }

    /// Filled ellipse with semi-axes `radii`, rotated by `angle`.
    pub fn ellipse(
        &mut self,
        centre: [f32; 2],
        radii: [f32; 2],
        angle: f32,
        alpha: f32,
        paint: impl Fn(f32, f32) -> [f32; 3],
    ) {
        let (ax, ay) = (radii[0].max(0.5), radii[1].max(0.5));
        let m = ax.min(ay);
        self.fill_sdf(
            centre,
            ax.max(ay),
            angle,
            alpha,
            |x, y| (((x / ax).powi(2) + (y / ay).powi(2)).sqrt() - 1.0) * m,
            paint,
        );
    }

    /// Filled rectangle with half extents `half`, rotated by `angle`.
    pub fn rect(
        &mut self,
        centre: [f32; 2],
        half: [f32; 2],
        angle: f32,
        alpha: f32,
        paint: impl Fn(f32, f32) -> [f32; 3],
    ) {
        let (hx, hy) = (half[0].max(0.5), half[1].max(0.5));
        self.fill_sdf(
            centre,
            (hx * hx + hy * hy).sqrt(),
            angle,
            alpha,
            |x, y| (x.abs() - hx).max(y.abs() - hy),
            paint,
        );
    }

    /// One horizontal and one vertical box-filter pass of the given radius (edges clamped).
    pub fn box_blur(&mut self, radius: usize) {
        if radius == 0 {
            return;
        }
        let (w, h) = (self.width, self.height);
        let mut line = vec![[0.0f32; 3]; w.max(h)];
        let norm = 1.0 / (2 * radius + 1) as f32;
        let pass = |get: &dyn Fn(usize) -> [f32; 3], n: usize, line: &mut [[f32; 3]]| {
            let mut acc = [0.0f32; 3];
            for k in 0..=2 * radius {
                let v = get(k.saturating_sub(radius).min(n - 1));
                for c in 0..3 {
                    acc[c] += v[c];
                }
            }
            for (i, out) in line.iter_mut().enumerate().take(n) {
                *out = acc.map(|a| a * norm);
                let add = get((i + radius + 1).min(n - 1));
                let rem = get(i.saturating_sub(radius));
                for c in 0..3 {
                    acc[c] += add[c] - rem[c];
                }
            }
        };
        let mut col = vec![[0.0f32; 3]; w.max(h)];
        for y in 0..h {
            col[..w].copy_from_slice(&self.px[y * w..(y + 1) * w]);
            pass(&|i| col[i], w, &mut line);
            self.px[y * w..(y + 1) * w].copy_from_slice(&line[..w]);
        }
        for x in 0..w {
            for (y, c) in col.iter_mut().take(h).enumerate() {
                *c = self.px[y * w + x];
            }
            pass(&|i| col[i], h, &mut line);
            for (y, v) in line.iter().take(h).enumerate() {
                self.px[y * w + x] = *v;
            }
        }
    }

    /// A light [1 2 1]/4 smoothing in both directions: the softness of any real lens, and the
    /// anti-aliasing of rasterised edges.
    pub fn soften(&mut self) {
        let (w, h) = (self.width, self.height);
        let mut tmp = self.px.clone();
        for y in 0..h {
            for x in 0..w {
                let l = self.px[y * w + x.saturating_sub(1)];
                let m = self.px[y * w + x];
                let r = self.px[y * w + (x + 1).min(w - 1)];
                tmp[y * w + x] = [0, 1, 2].map(|c| 0.25 * (l[c] + 2.0 * m[c] + r[c]));
            }
        }
        for y in 0..h {
            for x in 0..w {
                let u = tmp[y.saturating_sub(1) * w + x];
                let m = tmp[y * w + x];
                let d = tmp[(y + 1).min(h - 1) * w + x];
                self.px[y * w + x] = [0, 1, 2].map(|c| 0.25 * (u[c] + 2.0 * m[c] + d[c]));
            }
        }
    }

    /// Quantise to RGB8, adding zero-mean sensor noise of standard deviation `sigma` (in [0, 1]
    /// units) from a stream seeded by `seed`.
    pub fn to_rgb8(&self, sigma: f32, seed: u64) -> Vec<u8> {
        let mut state = seed;
        let mut out = Vec::with_capacity(self.px.len() * 3);
        // Triangular noise (sum of two uniforms) has variance 1/6 on [−1, 1].
        let amp = sigma * 6f32.sqrt() * 255.0;
        for p in &self.px {
            let r = splitmix64(&mut state);
            for (c, v) in p.iter().enumerate() {
                let bits = (r >> (c * 20)) & 0xFFFFF;
                let (u1, u2) = ((bits & 0x3FF) as f32 / 1023.0, (bits >> 10) as f32 / 1023.0);
                let n = (u1 + u2 - 1.0) * amp;
                out.push((v * 255.0 + n).round().clamp(0.0, 255.0) as u8);
            }
        }
        out
    }
}

/// SplitMix64: a tiny, fast, fully specified stream for per-pixel noise.
pub(crate) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A hash of a lattice point to [0, 1).
pub(crate) fn hash2(x: i32, y: i32, seed: u32) -> f32 {
    let mut h = (x as u32).wrapping_mul(0x27d4_eb2d)
        ^ (y as u32).wrapping_mul(0x1656_67b1)
        ^ seed.wrapping_mul(0x9e37_79b9);
    h ^= h >> 15;
    h = h.wrapping_mul(0x2c1b_3c6d);
    h ^= h >> 12;
    h = h.wrapping_mul(0x297a_2d39);
    h ^= h >> 15;
    (h >> 8) as f32 / (1u32 << 24) as f32
}

/// Smooth value noise in [0, 1) with unit lattice spacing.
pub(crate) fn value_noise(x: f32, y: f32, seed: u32) -> f32 {
    let (fx, fy) = (x.floor(), y.floor());
    let (ix, iy) = (fx as i32, fy as i32);
    let (tx, ty) = (x - fx, y - fy);
    let (sx, sy) = (tx * tx * (3.0 - 2.0 * tx), ty * ty * (3.0 - 2.0 * ty));
    let a = hash2(ix, iy, seed);
    let b = hash2(ix + 1, iy, seed);
    let c = hash2(ix, iy + 1, seed);
    let d = hash2(ix + 1, iy + 1, seed);
    let top = a + (b - a) * sx;
    let bottom = c + (d - c) * sx;
    top + (bottom - top) * sy
}

/// Two octaves of value noise, in [0, 1).
pub(crate) fn fbm2(x: f32, y: f32, seed: u32) -> f32 {
    (2.0 * value_noise(x, y, seed) + value_noise(2.03 * x, 2.03 * y, seed ^ 0x5bd1)) / 3.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vertex(x: f32, y: f32, z: f32) -> Vertex {
        Vertex {
            pos: [x, y, z],
            attr: [z; ATTRS],
        }
    }

    #[test]
    fn nearer_triangle_wins_and_coverage_follows_pixel_centres() {
        let mut verts = vec![
            vertex(0.0, 0.0, 0.0),
            vertex(8.0, 0.0, 0.0),
            vertex(0.0, 8.0, 0.0),
        ];
        verts.extend([
            vertex(0.0, 0.0, 1.0),
            vertex(4.0, 0.0, 1.0),
            vertex(0.0, 4.0, 1.0),
        ]);
        let mesh = Mesh {
            verts,
            tris: vec![[0, 1, 2], [3, 5, 4]],
            materials: vec![Material::Head, Material::Ear],
        };
        let mut g = GBuffer::new(10, 10);
        g.rasterise(&mesh);
        assert_eq!(g.attributes(&mesh, 0).map(|a| a.0), Some(Material::Ear));
        assert_eq!(g.attributes(&mesh, 5).map(|a| a.0), Some(Material::Head));
        // Pixel (7, 7) has its centre (7.5, 7.5) outside both triangles.
        assert!(g.attributes(&mesh, 7 * 10 + 7).is_none());
        assert_eq!(g.depth_at(1.2, 1.7), Some(1.0));
        assert_eq!(g.depth_at(-0.1, 1.0), None);
    }

    #[test]
    fn box_blur_preserves_a_constant_image() {
        let mut f = Frame::new(7, 5);
        f.px.iter_mut().for_each(|p| *p = [0.25, 0.5, 0.75]);
        f.box_blur(2);
        f.soften();
        assert!(
            f.px.iter()
                .all(|p| (p[0] - 0.25).abs() < 1e-6 && (p[2] - 0.75).abs() < 1e-6)
        );
    }

    #[test]
    fn value_noise_is_continuous_and_bounded() {
        for i in 0..200 {
            let x = i as f32 * 0.173;
            let a = value_noise(x, 0.3 * x, 9);
            let b = value_noise(x + 1e-3, 0.3 * x, 9);
            assert!((0.0..1.0).contains(&a) && (a - b).abs() < 0.01);
        }
    }
}
