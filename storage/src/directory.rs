//! The county's directory: communities, grids with their published jurisdiction, and the index
//! from a normalised address to the grid that covers it.

use lianxin_protocol::v1::{Community, Grid};
use prost::Message;

use crate::trees::{decode_u64, key1};
use crate::{Result, Store};

/// Normalises an address for look-up: trims, folds ASCII case, drops whitespace and common
/// punctuation, and maps full-width digits and letters to ASCII, so that "幸福路 12号" and
/// "幸福路１２号" match.
pub fn normalise_address(address: &str) -> String {
    address
        .chars()
        .filter_map(|c| {
            let c = match c {
                '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
                '\u{3000}' => ' ',
                _ => c,
            };
            if c.is_whitespace() || matches!(c, ',' | '.' | '，' | '。' | '、' | '-' | '_') {
                None
            } else {
                Some(c.to_ascii_lowercase())
            }
        })
        .collect()
}

impl Store {
    /// Creates or replaces a community.
    pub fn put_community(&self, community: &Community) -> Result<()> {
        self.trees
            .communityid_community
            .insert(key1(community.id), community.encode_to_vec())?;
        Ok(())
    }

    /// The community with this id.
    pub fn community(&self, id: u64) -> Result<Option<Community>> {
        match self.trees.communityid_community.get(key1(id))? {
            Some(v) => Ok(Some(Community::decode(&*v)?)),
            None => Ok(None),
        }
    }

    /// Every community, in id order.
    pub fn communities(&self) -> Result<Vec<Community>> {
        self.trees
            .communityid_community
            .iter()
            .map(|item| Ok(Community::decode(&*item?.1)?))
            .collect()
    }

    /// Creates or replaces a grid.
    pub fn put_grid(&self, grid: &Grid) -> Result<()> {
        self.trees
            .gridid_grid
            .insert(key1(grid.id), grid.encode_to_vec())?;
        Ok(())
    }

    /// The grid with this id.
    pub fn grid(&self, id: u64) -> Result<Option<Grid>> {
        match self.trees.gridid_grid.get(key1(id))? {
            Some(v) => Ok(Some(Grid::decode(&*v)?)),
            None => Ok(None),
        }
    }

    /// Every grid, in id order.
    pub fn grids(&self) -> Result<Vec<Grid>> {
        self.trees
            .gridid_grid
            .iter()
            .map(|item| Ok(Grid::decode(&*item?.1)?))
            .collect()
    }

    /// Records that an address lies in a grid (replacing any earlier grid for it).
    pub fn put_address(&self, address: &str, grid_id: u64) -> Result<()> {
        let key = normalise_address(address);
        self.trees
            .address_gridid
            .insert(key.as_bytes(), &key1(grid_id))?;
        Ok(())
    }

    /// The grid covering an address: an exact match, else the longest recorded address that
    /// begins the given one (so "幸福路12号3单元" falls in the grid of "幸福路12号").
    pub fn grid_of_address(&self, address: &str) -> Result<Option<u64>> {
        let key = normalise_address(address);
        let mut end = key.len();
        while end > 0 {
            if key.is_char_boundary(end)
                && let Some(v) = self.trees.address_gridid.get(&key.as_bytes()[..end])?
            {
                return Ok(Some(decode_u64(&v)?));
            }
            end -= 1;
        }
        Ok(None)
    }

    /// Number of addresses recorded.
    pub fn address_count(&self) -> usize {
        self.trees.address_gridid.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn addresses_match_despite_spacing_and_full_width_digits() {
        assert_eq!(
            normalise_address(" 幸福路 12号 "),
            normalise_address("幸福路１２号")
        );
        assert_eq!(normalise_address("Xingfu Rd. 12"), "xingfurd12");
    }

    #[test]
    fn longest_recorded_prefix_wins() {
        let store = Store::temporary().unwrap();
        store.put_address("幸福路", 1).unwrap();
        store.put_address("幸福路12号", 2).unwrap();
        assert_eq!(store.grid_of_address("幸福路12号3单元").unwrap(), Some(2));
        assert_eq!(store.grid_of_address("幸福路5号").unwrap(), Some(1));
        assert_eq!(store.grid_of_address("人民路1号").unwrap(), None);
        assert_eq!(store.grid_of_address("").unwrap(), None);
    }

    #[test]
    fn grids_and_communities_round_trip() {
        let store = Store::temporary().unwrap();
        store
            .put_community(&Community {
                id: 1,
                name: "幸福社区".into(),
            })
            .unwrap();
        let grid = Grid {
            id: 10,
            community_id: 1,
            name: "第一网格".into(),
            jurisdiction: vec!["幸福路1-20号".into()],
            head_id: 3,
        };
        store.put_grid(&grid).unwrap();
        assert_eq!(store.grid(10).unwrap(), Some(grid));
        assert_eq!(store.communities().unwrap().len(), 1);
    }
}
